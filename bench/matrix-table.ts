// The matrix tables of docs/results.md from a `bench matrix` result: per attack and defense, the seeds
// aggregated (targets found out of runs, means of the rates), beside the paper's numbers. Several
// files (e.g. one per seed, run separately) are read as one matrix; they must share one scale.
//
//   npm run bench -- matrix-table bench/results/matrix-<date>.json [more.json ...]
import { readFile } from 'node:fs/promises';
import { isCleanLabel } from '../attacks/index.js';
import { BENCH_ATTACKS } from './lib/attacks.js';
import type { MatrixCell } from './matrix.js';

/** Paper, CIFAR-10 at full scale (method.md): no defense ACC/ASR, ours ACC/ASR, relabel accuracy. */
const PAPER: Record<string, string> = {
  badnets: '94.9/100 -> 92.6/0.20, relabel 92.6',
  blend: '94.2/98.3 -> 92.4/2.00, relabel 88.3',
  wanet: '94.3/98.0 -> 92.0/0.28, relabel 90.3',
  lc: '94.9/99.3 -> 92.8/0.06, (removed)',
  issba: '94.5/100 -> 90.9/0.11, relabel 92.6',
  'adap-patch': '95.2/80.9 -> 90.6/0.13, relabel 42.1',
  'adap-blend': '95.0/64.9 -> 90.5/0.00, relabel 36.5',
};

const files = process.argv.slice(2);
if (!files.length) throw new Error('usage: npm run bench -- matrix-table <bench/results/matrix-*.json> [more.json ...]');
interface MatrixResult {
  cells: MatrixCell[];
  pixelFloor: { condition: string; pixelRelabelAccuracy?: number }[];
  scale: unknown;
  minutes: number;
}
const results = await Promise.all(files.map(async (f) => JSON.parse(await readFile(f, 'utf8')) as MatrixResult));
// Averaging cells of different scales would print a row no run measured.
const scales = new Set(results.map((r) => JSON.stringify(r.scale)));
if (scales.size > 1) throw new Error(`matrix-table: the files have different scales (${[...scales].join(' vs ')}): ${files.join(', ')}`);
const body: MatrixResult = {
  cells: results.flatMap((r) => r.cells),
  pixelFloor: results.flatMap((r) => r.pixelFloor),
  scale: results[0].scale,
  minutes: results.reduce((s, r) => s + r.minutes, 0),
};
const mean = (xs: (number | undefined)[]): string => {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? ((100 * v.reduce((a, b) => a + b, 0)) / v.length).toFixed(1) : '-';
};
const groups = new Map<string, MatrixCell[]>();
for (const c of body.cells) {
  const key = `${c.condition}\u0000${c.defense}`;
  groups.set(key, [...(groups.get(key) ?? []), c]);
}
console.log(`scale ${JSON.stringify(body.scale)}; ${body.minutes.toFixed(0)} min\n`);
console.log(
  '| attack | defense | runs | target found | target S_ND z (mean) | false targets (mean) | TPR % | FPR % | relabel acc. % | poisoned kept % | genuine lost % | ACC % | ASR % | pixel floor relabel % | paper (no defense -> ours) |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const [key, cells] of groups) {
  const [condition, defense] = key.split('\u0000');
  const clean = condition === 'clean';
  const found = clean ? `${cells.filter((c) => c.flagged.length === 0).length} clean` : `${cells.filter((c) => c.targetFound).length}`;
  const attack = BENCH_ATTACKS[condition.split('@')[0]];
  // The target's normalised S_ND (whatever the audit's ndNormalization was): how near the threshold a miss was.
  const target = attack?.targetClass;
  const z = target === undefined ? [] : cells.map((c) => c.classes[target]?.sNDNormalized).filter((v): v is number => v !== undefined);
  const zCell = defense === 'flow-relabel' && z.length ? (z.reduce((a, b) => a + b, 0) / z.length).toFixed(2) : '';
  // A clean-label attack's poisoned samples already carry their true label: no relabel floor.
  const cleanLabel = attack !== undefined && isCleanLabel({ ...attack, seed: 0 });
  const floor = cleanLabel ? [] : body.pixelFloor.filter((f) => f.condition === condition).map((f) => f.pixelRelabelAccuracy);
  console.log(
    `| ${condition} | ${defense} | ${cells.length} | ${found} | ${zCell} | ${(cells.reduce((s, c) => s + c.falseTargets.length, 0) / cells.length).toFixed(1)} | ` +
      `${mean(cells.map((c) => c.tpr))} | ${mean(cells.map((c) => c.fpr))} | ${mean(cells.map((c) => c.relabelAccuracy))} | ${mean(cells.map((c) => c.poisonedKept))} | ` +
      `${mean(cells.map((c) => c.genuineLost))} | ${mean(cells.map((c) => c.acc))} | ${mean(cells.map((c) => c.asr))} | ${defense === 'flow-relabel' ? mean(floor) : ''} | ${defense === 'flow-relabel' ? (PAPER[condition] ?? '') : ''} |`,
  );
}
