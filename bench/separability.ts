// Is the poison separable at all, and by what? For every poisoned audit a `bench matrix` run
// left in its store (one row per distinct density matrix), inside the target class: how well
// each per-sample quantity of the flows tells the poisoned samples from the genuine ones, as the
// AUC (probability that a random poisoned sample scores above a random genuine one; 0.5 is
// chance, 0 or 1 perfect):
//   own density       log p_t(z)              what the disruptive test's "only the own flow
//                                             explains it" needs high
//   best foreign      max_{y != t} log p_y(z) what "another class explains it" (non-disruptive) needs high
//   poison score      s_t(z), the audit's     low at the relabelled end (ml/score.ts)
//   linear, held out  Fisher's discriminant   is there any direction of the features that
//                     on the features          separates them? Fitted on half of each group,
//                                              scored on the other half (two folds, averaged),
//                                              so 112 dimensions cannot fake a separation
// beside the class-level verdicts the audit gave the target (rank-z of S_ND, S_D). A class test
// can only fire on what these separate. The flows' quantities near 0.5 with the linear AUC far
// from it means the features see the poison but the densities do not; all near 0.5, the
// encoder does not see it. No network is trained (the discriminant is closed-form).
//
//   npm run bench -- separability [--store .cache/bench-matrix] [--json out.json]
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readMatrix } from '../activities/io.js';
import { openDataset } from '../data/dataset.js';
import type { PoisonTruth } from '../data/types.js';
import { cholesky, choleskySolve } from '../ml/class-gaussians.js';
import { defaultAuditConfig } from '../ml/config.js';
import { rowMean, scatterMatrix } from '../ml/defenses/pca.js';
import { maxForeign } from '../ml/density.js';
import type { Matrix } from '../ml/matrix.js';
import { poisonScores } from '../ml/score.js';
import { artifactFileHash, storedReports } from './lib/matrix-store.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    store: { type: 'string', default: join('.cache', 'bench-matrix') },
    json: { type: 'string' },
  },
});
const store = values.store;

/** P(a random `pos` value > a random `neg` value), ties counting half (the Mann-Whitney AUC). */
function auc(pos: readonly number[], neg: readonly number[]): number {
  const all = [...pos.map((v) => ({ v, p: 1 })), ...neg.map((v) => ({ v, p: 0 }))].sort((a, b) => a.v - b.v);
  // Sum of the positives' mid-ranks.
  let rankSum = 0;
  for (let i = 0; i < all.length;) {
    let j = i;
    while (j < all.length && all[j].v === all[i].v) j++;
    const mid = (i + j + 1) / 2;
    for (let k = i; k < j; k++) if (all[k].p) rankSum += mid;
    i = j;
  }
  return (rankSum - (pos.length * (pos.length + 1)) / 2) / (pos.length * neg.length);
}

/** Ridge of the discriminant's covariance, relative to its mean variance: folds of 15-300 samples in 112 dimensions. */
const DISCRIMINANT_RIDGE = 0.1;

/**
 * Held-out AUC of Fisher's linear discriminant for `pos` against `neg` rows of `x`: the
 * direction Sigma^-1 (mean_pos - mean_neg), Sigma their pooled covariance plus a ridge, fitted
 * on every other row of each group and scored on the rest, then the other way round; the two
 * folds' AUCs averaged.
 */
function heldOutLinearAuc(x: Matrix, pos: readonly number[], neg: readonly number[]): number {
  const d = x.cols;
  const half = (rows: readonly number[], fold: number) => rows.filter((_, k) => k % 2 === fold);
  let sum = 0;
  for (const fold of [0, 1]) {
    const [p, n] = [half(pos, fold), half(neg, fold)];
    const [mp, mn] = [rowMean(x, p), rowMean(x, n)];
    const [sp, sn] = [scatterMatrix(x, p, mp), scatterMatrix(x, n, mn)];
    const sigma = sp.map((v, k) => (v + sn[k]) / (p.length + n.length));
    let trace = 0;
    for (let k = 0; k < d; k++) trace += sigma[k * d + k];
    for (let k = 0; k < d; k++) sigma[k * d + k] += (DISCRIMINANT_RIDGE * trace) / d;
    const w = choleskySolve(
      cholesky(sigma, d),
      d,
      mp.map((v, k) => v - mn[k]),
    );
    const project = (rows: readonly number[]) => rows.map((i) => w.reduce((s, wk, k) => s + wk * x.data[i * d + k], 0));
    sum += auc(project(half(pos, 1 - fold)), project(half(neg, 1 - fold)));
  }
  return sum / 2;
}

interface Row {
  attack: string;
  seed: number;
  /** The encoder stages pooled into the features ([4] when the report predates the setting). */
  stages: number[];
  poisoned: number;
  targetSize: number;
  auc: { ownDensity: number; bestForeign: number; poisonScore: number; linearHeldOut: number };
  rankZ?: number;
  sD: number;
}

const rows: Row[] = [];
const seen = new Set<string>();
for (const report of await storedReports(store)) {
  const { attack, density, features } = report.artifacts;
  if (!attack || !density || !features) continue;
  const content = await artifactFileHash(store, density, 'density.f32');
  if (seen.has(content)) continue;
  seen.add(content);
  const truth = JSON.parse(await readFile(join(store, attack, 'truth.json'), 'utf8')) as PoisonTruth;
  if (!truth.poisoned.length) continue;
  const data = await openDataset(join(store, attack, 'dataset'));
  try {
    const d = await readMatrix(join(store, density), 'density');
    const t = truth.targetClass;
    const score = poisonScores(d, data.labels, defaultAuditConfig.relabel.scoreReference);
    const poisoned = new Set(truth.poisoned);
    const sides = { own: [[], []] as number[][], foreign: [[], []] as number[][], score: [[], []] as number[][] };
    const members: number[][] = [[], []];
    for (let i = 0; i < data.labels.length; i++) {
      if (data.labels[i] !== t) continue;
      const k = poisoned.has(i) ? 0 : 1;
      members[k].push(i);
      sides.own[k].push(d.data[i * d.cols + t]);
      sides.foreign[k].push(maxForeign(d.data, i * d.cols, d.cols, t).value);
      sides.score[k].push(score[i]);
    }
    const target = report.classes[t];
    rows.push({
      attack: truth.attack,
      seed: report.config?.seed ?? 0,
      stages: report.config?.features?.stages ?? [4],
      poisoned: sides.own[0].length,
      targetSize: sides.own[0].length + sides.own[1].length,
      auc: {
        ownDensity: auc(sides.own[0], sides.own[1]),
        bestForeign: auc(sides.foreign[0], sides.foreign[1]),
        poisonScore: auc(sides.score[0], sides.score[1]),
        linearHeldOut: heldOutLinearAuc(await readMatrix(join(store, features), 'features'), members[0], members[1]),
      },
      ...(target.sNDNormalized !== undefined ? { rankZ: target.sNDNormalized } : {}),
      sD: target.sD,
    });
  } finally {
    await data.close();
  }
}
rows.sort((a, b) => a.attack.localeCompare(b.attack) || a.seed - b.seed || a.stages.length - b.stages.length);

const f2 = (x: number) => x.toFixed(2);
console.log(
  '| attack | seed | stages | poisoned / target | AUC own density | AUC best foreign | AUC poison score | AUC linear, held out | target rank-z | target S_D |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.attack} | ${r.seed} | ${r.stages.join(',')} | ${r.poisoned} / ${r.targetSize} | ${f2(r.auc.ownDensity)} | ${f2(r.auc.bestForeign)} | ${f2(r.auc.poisonScore)} | ${f2(r.auc.linearHeldOut)} | ${r.rankZ === undefined ? '-' : f2(r.rankZ)} | ${r.sD} |`,
  );
if (values.json) {
  await writeFile(values.json, JSON.stringify({ bench: 'separability', date: new Date().toISOString(), store, rows }, null, 1) + '\n');
  console.log(`wrote ${values.json}`);
}
