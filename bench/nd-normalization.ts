// Which cross-class normalisation of S_ND (mean foreign NLL of a class's flow) separates a
// non-disruptively poisoned target class from clean classes? Measures the three candidates of
// ml/detect.ts on
//   (a) synthetic class-conditional Gaussians with unequal class spreads: clean, non-disruptive
//       poisoning (10% or 5% of the set drawn from other classes, slightly shifted, labelled 0) and
//       disruptive poisoning (30% of class 0 moved to a far tight cluster);
//   (b) real CIFAR-10 images (a few hundred per class, decoded with sharp) as 8x8 and 16x16
//       downsampled RGB pixels: clean, and BadNets (3x3 patch upper-left, 10% of the set from
//       the other classes, relabelled to class 0).
// Per-class flows (ml/flow.ts) are trained exactly as in the audit, smaller and shorter.
// For each normalisation it prints the target's score against the clean classes' range; for
// clean sets the lowest class; plus the disruptive test's S_D. Results feed
// docs/nd-normalization.md.
//
//   npx tsx bench/nd-normalization.ts [--per-class 300] [--synthetic-trials 3] [--cifar-trials 1]
//                                     [--epochs 15] [--hidden 64] [--backend wasm] [--save dir] [--from dir] [--json file]
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { perClassFlows } from '../ml/flow.js';
import { selectBackend, type BackendName } from '../backend/backend.js';
import { defaultAuditConfig, type FlowConfig, type NdNormalization, type ScoreReference } from '../ml/config.js';
import { densityMatrix } from '../ml/density.js';
import { poisonScores } from '../ml/score.js';
import { detectTargets } from '../ml/detect.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { C, cifarPixelSets, syntheticSet, TARGET, type SetCondition } from './lib/nd-sets.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'per-class': { type: 'string', default: '300' },
    'synthetic-trials': { type: 'string', default: '3' },
    'cifar-trials': { type: 'string', default: '1' },
    epochs: { type: 'string', default: '15' },
    hidden: { type: 'string', default: '64' },
    backend: { type: 'string', default: 'wasm' },
    only: { type: 'string', default: 'synthetic,cifar' },
    /** Folder to write each density matrix to (JSON), for offline analysis. */
    save: { type: 'string' },
    /** Analyse density matrices saved by --save instead of training flows. */
    from: { type: 'string' },
    /** Also write every row (normalised S_ND per method and class, S_D, verdict) to this JSON file. */
    json: { type: 'string' },
  },
});
const perClass = Number(values['per-class']);
const syntheticTrials = Number(values['synthetic-trials']);
const cifarTrials = Number(values['cifar-trials']);
const flowCfg: FlowConfig = { epochs: Number(values.epochs), batchSize: 16, lr: 1e-3, hidden: Number(values.hidden) };
const METHODS: NdNormalization[] = ['median-ratio', 'own-gap', 'robust-z', 'rank-z'];
/** Not a config option: a robust z-score of log(own gap), printed to show what combining the two would give. */
const DIAGNOSTIC = 'z(log own-gap)';
type Method = NdNormalization | typeof DIAGNOSTIC;
const ALL: Method[] = [...METHODS, DIAGNOSTIC];

function robustZ(xs: number[]): number[] {
  const med = (v: number[]) => {
    const a = v.slice().sort((p, q) => p - q);
    const m = a.length >> 1;
    return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
  };
  return xs.map((x, y) => {
    const rest = xs.filter((_, c) => c !== y);
    const m = med(rest);
    return (x - m) / (1.4826 * med(rest.map((r) => Math.abs(r - m))));
  });
}
// Flows need no convolution gradients, so wasm (fast dense products) is fine for training them.
const backend = await selectBackend(values.backend as BackendName, 'inference', () => {});
console.log(
  `backend ${backend.name}; flows: hidden ${flowCfg.hidden}, ${flowCfg.epochs} epochs, batch ${flowCfg.batchSize}, lr ${flowCfg.lr}`,
);

interface Row {
  dataset: string;
  condition: SetCondition;
  trial: number;
  /** Normalised S_ND per class, per method. */
  normalized: Record<Method, number[]>;
  sD: number[];
  /** Classes flagged with the default detection config, and their kinds. */
  flagged: string;
  /** Share of truly poisoned samples among the target's lowest / highest alpha poison scores, and overall. */
  poisonedLow: number;
  poisonedHigh: number;
  poisonedShare: number;
  /** The same split of the target under each poison-score reference. */
  byReference: Record<ScoreReference, ScoreSplit>;
  seconds: number;
}
interface ScoreSplit {
  /** Poisoned share of the target's lowest / highest alpha poison scores. */
  low: number;
  high: number;
  /** Poisoned samples in the highest alpha (kept as clean by a non-disruptive split) / all poisoned of the target. */
  highOfPoisoned: number;
  /**
   * How well the score orders the target's own samples: the probability that a poisoned sample
   * scores below a genuine one (ROC AUC, ties half). It bounds what any split of the ranking can do.
   */
  auc: number;
  /** The cost of keeping more: poisoned samples in the highest 2 alpha / all poisoned of the target. */
  high2OfPoisoned: number;
}
const SCORE_REFERENCES: ScoreReference[] = ['max-foreign', 'median-foreign'];
const rows: Row[] = [];

async function measure(
  dataset: string,
  condition: Row['condition'],
  trial: number,
  features: Matrix,
  labels: Int32Array,
  truth: Uint8Array,
  seed: number,
) {
  const t0 = performance.now();
  const flows = await perClassFlows(features, labels, C, flowCfg, seed);
  const density = densityMatrix(flows, features);
  flows.forEach((f) => f.dispose());
  if (values.save) {
    await mkdir(values.save, { recursive: true });
    const body = {
      dataset,
      condition,
      trial,
      labels: Array.from(labels),
      truth: Array.from(truth),
      rows: density.rows,
      cols: density.cols,
      density: Array.from(density.data),
    };
    await writeFile(join(values.save, `${dataset}-${condition}-${trial}.json`), JSON.stringify(body));
  }
  analyse(dataset, condition, trial, density, labels, truth, (performance.now() - t0) / 1000);
}

/** P(score of a positive < score of a negative), ties counted half, from ascending `scores` (Mann-Whitney). */
function rankAuc(ascending: number[], positive: boolean[]): number {
  let below = 0; // negatives strictly below, walking up
  let pairs = 0;
  let positives = 0;
  for (let i = 0; i < ascending.length;) {
    let j = i;
    let pos = 0;
    let neg = 0;
    for (; j < ascending.length && ascending[j] === ascending[i]; j++) positive[j] ? pos++ : neg++;
    pairs += pos * (below + neg / 2); // positive above these negatives: counts against
    positives += pos;
    below += neg;
    i = j;
  }
  return positives && below ? 1 - pairs / (positives * below) : NaN; // below: every negative by now
}

function analyse(
  dataset: string,
  condition: Row['condition'],
  trial: number,
  density: Matrix,
  labels: Int32Array,
  truth: Uint8Array,
  seconds: number,
) {
  const normalized = {} as Record<Method, number[]>;
  for (const m of METHODS) {
    try {
      normalized[m] = detectTargets(density, labels, { ...defaultAuditConfig.detection, ndNormalization: m }).map((d) => d.sNDNormalized);
    } catch {
      normalized[m] = new Array<number>(C).fill(NaN); // median-ratio on negative NLLs
    }
  }
  const dets = detectTargets(density, labels, defaultAuditConfig.detection);
  // The diagnostic uses the same statistics as the detector (disruptive outliers left out).
  normalized[DIAGNOSTIC] = robustZ(dets.map((d) => Math.log(d.sND - d.ownNLL)));
  const sD = dets.map((d) => d.sD);
  const flagged =
    dets
      .filter((d) => d.kind !== 'clean')
      .map((d) => `${d.index}:${d.kind}${d.ndFlag && d.dFlag ? '(both)' : ''}`)
      .join(' ') || '-';
  // Where the truly poisoned samples of the target class fall in its poison-score ranking, under
  // each score reference (ml/score.ts): the share of poisoned samples in the lowest and highest
  // alpha of the target, and the poisoned samples in the highest alpha / all poisoned.
  const targetRows = Array.from(labels.keys()).filter((i) => labels[i] === TARGET);
  const k = Math.round(defaultAuditConfig.relabel.alpha * targetRows.length);
  const share = (idx: number[]) => idx.filter((i) => truth[i]).length / Math.max(1, idx.length);
  const poisonedCount = targetRows.filter((i) => truth[i]).length;
  const byReference = {} as Record<ScoreReference, ScoreSplit>;
  for (const reference of SCORE_REFERENCES) {
    const scores = poisonScores(density, labels, reference);
    const target = [...targetRows].sort((a, b) => scores[a] - scores[b]);
    const high = target.slice(target.length - k);
    const high2 = target.slice(target.length - 2 * k);
    byReference[reference] = {
      low: share(target.slice(0, k)),
      high: share(high),
      highOfPoisoned: poisonedCount ? high.filter((i) => truth[i]).length / poisonedCount : NaN,
      auc: rankAuc(
        target.map((i) => scores[i]),
        target.map((i) => truth[i] === 1),
      ),
      high2OfPoisoned: poisonedCount ? high2.filter((i) => truth[i]).length / poisonedCount : NaN,
    };
  }
  const { low: poisonedLow, high: poisonedHigh } = byReference[defaultAuditConfig.relabel.scoreReference];
  rows.push({
    dataset,
    condition,
    trial,
    normalized,
    sD,
    flagged,
    seconds,
    poisonedLow,
    poisonedHigh,
    poisonedShare: share(targetRows),
    byReference,
  });
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' ');
  console.log(
    `${dataset} ${condition} #${trial} (${seconds.toFixed(0)} s) S_ND ${fmt(dets.map((d) => d.sND))} | own ${fmt(dets.map((d) => d.ownNLL))} | S_D ${fmt(sD)}`,
  );
}

const only = new Set((values.only ?? '').split(','));
const t0 = performance.now();
if (values.from) {
  for (const f of (await readdir(values.from)).filter((n) => n.endsWith('.json')).sort()) {
    const b = JSON.parse(await readFile(join(values.from, f), 'utf8')) as {
      dataset: string;
      /** detection-scale's saves name the attack; the set is labelled with it. */
      attack?: string;
      condition: Row['condition'];
      trial: number;
      labels: number[];
      truth?: number[];
      rows: number;
      cols: number;
      density: number[];
    };
    const truth = Uint8Array.from(b.truth ?? new Array<number>(b.labels.length).fill(0));
    analyse(
      b.attack ? `${b.dataset} ${b.attack}` : b.dataset,
      b.condition,
      b.trial,
      matrix(b.rows, b.cols, Float32Array.from(b.density)),
      Int32Array.from(b.labels),
      truth,
      0,
    );
  }
} else {
  if (only.has('synthetic'))
    for (let trial = 0; trial < syntheticTrials; trial++)
      for (const condition of ['clean', 'non-disruptive', 'non-disruptive-5%', 'disruptive'] as const) {
        const { features, labels, truth } = syntheticSet(trial, condition, perClass);
        await measure('synthetic-gauss-32d', condition, trial, features, labels, truth, 10 + trial);
      }
  if (only.has('cifar'))
    for (let trial = 0; trial < cifarTrials; trial++)
      for await (const set of cifarPixelSets(trial, perClass))
        await measure(set.dataset, set.condition, trial, set.features, set.labels, set.truth, 40 + trial);
}

// ---- summary ----

const lines: string[] = [];
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
lines.push('| data | condition | trial | method | target (class 0) | other classes min / median / max | margin |');
lines.push('|---|---|---|---|---|---|---|');
for (const r of rows) {
  for (const m of ALL) {
    const v = r.normalized[m];
    const others = v.filter((_, c) => c !== TARGET).sort((a, b) => a - b);
    // Margin: how far the target lies below the lowest other class (positive = separable).
    const margin = others[0] - v[TARGET];
    lines.push(
      `| ${r.dataset} | ${r.condition} | ${r.trial} | ${m} | ${f2(v[TARGET])} | ${f2(others[0])} / ${f2(others[others.length >> 1])} / ${f2(others[others.length - 1])} | ${f2(margin)} |`,
    );
  }
}
lines.push('');
lines.push('Across runs: lowest clean class (every class of clean sets, non-target classes of poisoned sets) vs highest poisoned target.');
lines.push('A fixed threshold separates when "clean lowest" > "target highest"; it must lie between them.');
lines.push('');
lines.push('| data | method | clean lowest | ND target highest (10% / 5%) | D target highest |');
lines.push('|---|---|---|---|---|');
for (const dataset of [...new Set(rows.map((r) => r.dataset))]) {
  const rs = rows.filter((r) => r.dataset === dataset);
  for (const m of ALL) {
    const clean = rs.flatMap((r) => r.normalized[m].filter((_, c) => r.condition === 'clean' || c !== TARGET));
    const target = (cond: Row['condition']) => {
      const v = rs.filter((r) => r.condition === cond).map((r) => r.normalized[m][TARGET]);
      return v.length ? f2(Math.max(...v)) : '-';
    };
    lines.push(
      `| ${dataset} | ${m} | ${f2(Math.min(...clean))} | ${target('non-disruptive')} / ${target('non-disruptive-5%')} | ${target('disruptive')} |`,
    );
  }
}
lines.push('');
lines.push(
  'Fixed thresholds over all runs: sets with a false flag (any clean class below the threshold) / runs, and non-disruptive targets caught / ND runs.',
);
lines.push('');
lines.push('| method | threshold | false-flag sets | ND targets caught |');
lines.push('|---|---|---|---|');
const THRESHOLDS: Record<Method, number[]> = {
  'median-ratio': [0.6, 0.7, 0.8],
  'own-gap': [0.3, 0.4, 0.5, 0.6],
  'robust-z': [-1.5, -2, -2.5, -3],
  'rank-z': [-1.5, -2, -2.5, -3],
  [DIAGNOSTIC]: [-2, -2.5, -3],
};
for (const m of ALL) {
  for (const t of THRESHOLDS[m]) {
    const falseSets = rows.filter((r) => r.normalized[m].some((v, c) => (r.condition === 'clean' || c !== TARGET) && v < t)).length;
    const nd = rows.filter((r) => r.condition.startsWith('non-disruptive'));
    const caught = nd.filter((r) => r.normalized[m][TARGET] < t).length;
    lines.push(`| ${m} | ${t} | ${falseSets} / ${rows.length} | ${caught} / ${nd.length} |`);
  }
}
lines.push('');
lines.push(
  'Poison score references on the targets of the poison-label sets (means over sets): poisoned share of the lowest alpha (relabelled) and highest alpha (kept), and poisoned kept / poisoned.',
);
lines.push('');
lines.push(
  '| reference | sets | lowest-alpha poisoned share | highest-alpha poisoned share | poisoned kept | AUC (poisoned below genuine) | poisoned kept, keeping 2 alpha |',
);
lines.push('|---|---|---|---|---|---|---|');
const labelled = rows.filter((r) => r.condition.startsWith('non-disruptive'));
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
for (const reference of SCORE_REFERENCES) {
  const b = labelled.map((r) => r.byReference[reference]);
  lines.push(
    `| ${reference} | ${b.length} | ${f2(mean(b.map((x) => x.low)))} | ${f2(mean(b.map((x) => x.high)))} | ${(100 * mean(b.map((x) => x.highOfPoisoned))).toFixed(1)}% | ` +
      `${f2(mean(b.map((x) => x.auc)))} (${f2(Math.min(...b.map((x) => x.auc)))}-${f2(Math.max(...b.map((x) => x.auc)))}) | ${(100 * mean(b.map((x) => x.high2OfPoisoned))).toFixed(1)}% |`,
  );
}
lines.push('');
const det = defaultAuditConfig.detection;
lines.push(`Default detection (${det.ndNormalization}, betaND ${det.betaND}, betaD ${det.betaD}, ${det.bins} bins, lambda ${det.lambda}):`);
lines.push('');
lines.push(
  '| data | condition | trial | flagged (class:kind) | S_D target | S_D other classes max | poisoned share of target: all / lowest-alpha s / highest-alpha s |',
);
lines.push('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const split = r.condition === 'clean' ? '-' : `${f2(r.poisonedShare)} / ${f2(r.poisonedLow)} / ${f2(r.poisonedHigh)}`;
  lines.push(
    `| ${r.dataset} | ${r.condition} | ${r.trial} | ${r.flagged} | ${f2(r.sD[TARGET])} | ${f2(Math.max(...r.sD.filter((_, c) => c !== TARGET)))} | ${split} |`,
  );
}
console.log(`\n${lines.join('\n')}\n\ntotal ${((performance.now() - t0) / 1000).toFixed(0)} s`);
if (values.json) {
  await mkdir(dirname(values.json), { recursive: true });
  await writeFile(
    values.json,
    JSON.stringify(
      { bench: 'nd-normalization', date: new Date().toISOString(), from: values.from ?? null, detection: det, target: TARGET, rows },
      null,
      1,
    ) + '\n',
  );
}
