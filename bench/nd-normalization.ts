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
import sharp from 'sharp';
import { applyStamp, cornerStamp } from '../attacks/badnets.js';
import { loadTrigger } from '../attacks/triggers.js';
import { ensureCifar10 } from '../data/cifar10.js';
import { perClassFlows } from '../ml/flow.js';
import { selectBackend, type BackendName } from '../backend/backend.js';
import { defaultAuditConfig, type FlowConfig, type NdNormalization, type ScoreReference } from '../ml/config.js';
import { densityMatrix } from '../ml/density.js';
import { poisonScores } from '../ml/score.js';
import { detectTargets } from '../ml/detect.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { Rng } from '../ml/random.js';

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
const C = 10;
const TARGET = 0;

// Flows need no convolution gradients, so wasm (fast dense products) is fine for training them.
const backend = await selectBackend(values.backend as BackendName, 'inference', () => {});
console.log(
  `backend ${backend.name}; flows: hidden ${flowCfg.hidden}, ${flowCfg.epochs} epochs, batch ${flowCfg.batchSize}, lr ${flowCfg.lr}`,
);

interface Row {
  dataset: string;
  condition: 'clean' | 'non-disruptive' | 'non-disruptive-5%' | 'disruptive';
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

// ---- (a) synthetic class-conditional Gaussians ----

function synthetic(trial: number, condition: Row['condition']): { features: Matrix; labels: Int32Array; truth: Uint8Array } {
  const d = 32;
  const rng = new Rng(1000 + trial);
  // Class means N(0, 0.5^2) per dim (overlapping classes, as in self-supervised feature spaces); per-class, per-dim spreads log-uniform in [0.6, 1.6], so the
  // classes differ in how broad they are (the source of S_ND's clean-class spread).
  const means = Array.from({ length: C }, () => Float32Array.from({ length: d }, () => 0.5 * rng.normal()));
  const spreads = Array.from({ length: C }, () =>
    Float32Array.from({ length: d }, () => Math.exp(rng.uniform(Math.log(0.6), Math.log(1.6)))),
  );
  const sample = (c: number, out: Float32Array, o: number) => {
    for (let j = 0; j < d; j++) out[o + j] = means[c][j] + spreads[c][j] * rng.normal();
  };
  const n = C * perClass;
  const poisoned = condition === 'non-disruptive' ? Math.round(0.1 * n) : condition === 'non-disruptive-5%' ? Math.round(0.05 * n) : 0;
  const data = new Float32Array((n + poisoned) * d);
  const labels = new Int32Array(n + poisoned);
  const truth = new Uint8Array(n + poisoned);
  for (let i = 0; i < n; i++) {
    labels[i] = i % C;
    sample(labels[i], data, i * d);
  }
  if (poisoned > 0) {
    // A "trigger" in feature space: a small shift (0.5 sd) along 4 fixed dims; the sample stays
    // in its source class's distribution, and is labelled as the target.
    for (let p = 0; p < poisoned; p++) {
      const i = n + p;
      sample(1 + (p % (C - 1)), data, i * d);
      for (let j = 0; j < 4; j++) data[i * d + j] += 0.5;
      labels[i] = TARGET;
      truth[i] = 1;
    }
  } else if (condition === 'disruptive') {
    // Clean-label style: 30% of the target's own samples moved to a tight cluster far from all.
    const far = Float32Array.from({ length: d }, () => 6 + rng.normal());
    let moved = 0;
    for (let i = 0; i < n && moved < 0.3 * perClass; i++) {
      if (labels[i] !== TARGET) continue;
      for (let j = 0; j < d; j++) data[i * d + j] = far[j] + 0.3 * rng.normal();
      truth[i] = 1;
      moved++;
    }
  }
  return { features: matrix(n + poisoned, d, data), labels, truth };
}

// ---- (b) CIFAR-10 pixels ----

async function decode(file: string): Promise<Uint8Array> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== 32 || info.height !== 32 || info.channels !== 3)
    throw new Error(`${file}: expected 32x32 RGB, got ${info.width}x${info.height}x${info.channels}`);
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Average-pools a 32x32 RGB image to side x side, values in [0, 1]. */
function pool(img: Uint8Array, side: number, out: Float32Array, o: number): void {
  const f = 32 / side;
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) s += img[((y * f + dy) * 32 + x * f + dx) * 3 + c];
        out[o + (y * side + x) * 3 + c] = s / (f * f * 255);
      }
}

async function cifarImages(trial: number): Promise<{ images: Uint8Array[]; labels: Int32Array }> {
  const { train, classes } = await ensureCifar10();
  const rng = new Rng(2000 + trial);
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  for (let c = 0; c < C; c++) {
    const files = (await readdir(join(train, classes[c]))).sort();
    const pick = rng.permutation(files.length).slice(0, perClass);
    for (const k of pick) {
      images.push(await decode(join(train, classes[c], files[k])));
      labels.push(c);
    }
  }
  return { images, labels: Int32Array.from(labels) };
}

async function cifar(trial: number) {
  const { images, labels } = await cifarImages(trial);
  const stamp = cornerStamp(await loadTrigger('badnet_patch_32.png', 32), 32, 'upper-left');
  const rng = new Rng(3000 + trial);
  // BadNets: 10% of the set, drawn from the non-target classes, stamped and relabelled to 0.
  const candidates = Array.from(labels.keys()).filter((i) => labels[i] !== TARGET);
  const order = rng.permutation(candidates.length);
  const poisonedIdx = new Set(Array.from(order.slice(0, Math.round(0.1 * labels.length)), (k) => candidates[k]));
  const poisonedLabels = labels.slice();
  const poisonedImages = images.map((img, i) => (poisonedIdx.has(i) ? applyStamp(img, 32, stamp) : img));
  for (const i of poisonedIdx) poisonedLabels[i] = TARGET;
  for (const side of [8, 16]) {
    const d = side * side * 3;
    const truth = Uint8Array.from(labels, (_, i) => (poisonedIdx.has(i) ? 1 : 0));
    for (const [condition, imgs, lab, tr] of [
      ['clean', images, labels, new Uint8Array(labels.length)],
      ['non-disruptive', poisonedImages, poisonedLabels, truth],
    ] as const) {
      const features = matrix(imgs.length, d);
      imgs.forEach((img, i) => pool(img, side, features.data, i * d));
      await measure(`cifar-pixels-${side}x${side}`, condition, trial, features, lab, tr, 40 + trial);
    }
  }
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
        const { features, labels, truth } = synthetic(trial, condition);
        await measure('synthetic-gauss-32d', condition, trial, features, labels, truth, 10 + trial);
      }
  if (only.has('cifar')) for (let trial = 0; trial < cifarTrials; trial++) await cifar(trial);
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
