// How well could a flagged target's poisoned samples be relabelled, and by which model? Reads
// the audits a `bench matrix` run left in its store and, for every poison-label attack among
// them, asks each rule for the source class of EVERY poisoned sample of the target (not only
// the 15% the split relabels), choosing among the foreign classes as the paper's relabelling
// does:
//   flows                    argmax of the per-class flows' log densities (the paper's rule)
//   flows, z on own class    each flow's log density standardised over its own class's samples
//   features: shared Gaussian  one Gaussian per class on the encoder features, one covariance
//                            (the audit's relabel model 'shared-gaussian', ml/class-gaussians.ts)
//   features: 10-NN / 30-NN  majority label of the nearest genuine foreign samples (cosine)
//   pixels: Gaussian         one full-covariance Gaussian per class on the leading principal
//                            components of the raw pixels (fitted on the foreign classes)
//   flows + pixels           the sum of the two, each standardised over the foreign samples
//   ..., shift-corrected     the same Gaussian on x - delta for the target's samples, where
//                            delta = mean(x over D^_P) - mean(x over the genuine foreign samples):
//                            a trigger moves its samples by about one shared offset, and D^_P
//                            (the split's relabelled end, found without ground truth) is mostly
//                            triggered samples drawn from the foreign classes
// Each rule is scored on every poisoned sample and on those the defense relabels (the poisoned
// samples in D^_P, the lowest alpha of the target by the default poison score: what the
// matrix's "relabel acc." counts). Nothing is trained: density, features and the poisoned
// dataset come from the store.
//
//   npm run bench -- relabel-rules [--store .cache/bench-matrix] [--components 32] [--feature-dim 112] [--json out.json]
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readMatrix } from '../activities/io.js';
import { openDataset } from '../data/dataset.js';
import type { PoisonTruth } from '../data/types.js';
import { principalComponents, projectRows, rowMean, scatterMatrix, symmetricEigen, type RowData } from '../ml/defenses/pca.js';
import { sharedGaussians } from '../ml/class-gaussians.js';
import { defaultAuditConfig } from '../ml/config.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { knownVerdict } from '../ml/detect.js';
import { splitAndRelabel } from '../ml/relabel.js';
import { poisonScores } from '../ml/score.js';
import { artifactFileHash, storedReports } from './lib/matrix-store.js';
import { pixelRows } from './lib/pixels.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    store: { type: 'string', default: join('.cache', 'bench-matrix') },
    components: { type: 'string', default: '32' },
    'feature-dim': { type: 'string' },
    json: { type: 'string' },
  },
});
const store = values.store;
const components = Number(values.components);
const onlyDim = values['feature-dim'] === undefined ? undefined : Number(values['feature-dim']);
const ALPHA = defaultAuditConfig.relabel.alpha;

/** Scores [rows x classes], higher = more likely that class. */
type Scores = { data: Float64Array; cols: number };
const RULES = [
  'flows',
  'flows, z on own class',
  'features: shared Gaussian',
  'features: 10-NN',
  'features: 30-NN',
  'pixels: Gaussian',
  'flows + pixels',
  'features: shared Gaussian, shift-corrected',
  'pixels: Gaussian, shift-corrected',
] as const;
type Rule = (typeof RULES)[number];

/**
 * log N(x; mu_y, Sigma_y) up to a shared constant, for every row and every class in `classes`,
 * each fitted on that class's `fit` rows.
 * Other classes' columns are -Infinity.
 */
function gaussianScores(x: RowData, labels: Int32Array, fit: readonly number[], classes: readonly number[], width: number): Scores {
  const n = labels.length;
  const d = x.cols;
  const out = new Float64Array(n * width).fill(-Infinity);
  const means = new Map<number, Float64Array>();
  const covs = new Map<number, Float64Array>();
  for (const y of classes) {
    const rows = fit.filter((i) => labels[i] === y);
    const m = rowMean(x, rows);
    means.set(y, m);
    covs.set(
      y,
      scatterMatrix(x, rows, m).map((v) => v / rows.length),
    );
  }
  const all = Array.from({ length: n }, (_, i) => i);
  for (const y of classes) {
    const { values: lambda, vectors } = symmetricEigen(covs.get(y)!, d);
    // A small ridge: a class of 300 samples gives a noisy, near-singular covariance.
    const ridge = 1e-4 * Math.max(...lambda);
    let logDet = 0;
    for (const l of lambda) logDet += Math.log(Math.max(l, 0) + ridge);
    // Mahalanobis distance in the covariance's eigenbasis.
    const p = projectRows(x, all, means.get(y)!, vectors, d);
    for (let i = 0; i < n; i++) {
      let maha = 0;
      for (let k = 0; k < d; k++) maha += p[i * d + k] ** 2 / (Math.max(lambda[k], 0) + ridge);
      out[i * width + y] = -0.5 * (maha + logDet);
    }
  }
  return { data: out, cols: width };
}

/** Majority label of the k most cosine-similar reference rows (ties: the nearer neighbour's). */
function knnScores(f: Matrix, labels: Int32Array, reference: readonly number[], rows: readonly number[], k: number, width: number): Scores {
  const d = f.cols;
  const norm = (i: number) => Math.hypot(...f.data.subarray(i * d, i * d + d)) || 1;
  const refNorm = new Map(reference.map((r) => [r, norm(r)]));
  const out = new Float64Array(labels.length * width);
  for (const i of rows) {
    const ni = norm(i);
    const sims = reference.map((r) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += f.data[i * d + j] * f.data[r * d + j];
      return { r, s: s / (ni * refNorm.get(r)!) };
    });
    sims.sort((a, b) => b.s - a.s);
    // Votes count 1 each; a tiny rank bonus breaks ties toward nearer neighbours.
    sims.slice(0, k).forEach(({ r }, rank) => (out[i * width + labels[r]] += 1 + 1e-6 * (k - rank)));
  }
  return { data: out, cols: width };
}

/** Each column minus its median, over the given rows, divided by the pooled spread of those rows. */
function standardised(s: Scores, rows: readonly number[], classes: readonly number[]): Scores {
  const vals: number[] = [];
  for (const i of rows) for (const y of classes) vals.push(s.data[i * s.cols + y]);
  vals.sort((a, b) => a - b);
  const med = vals[vals.length >> 1];
  const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
  const sd = Math.sqrt(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / vals.length) || 1;
  return { data: s.data.map((v) => (v - med) / sd), cols: s.cols };
}

/** Scores that put 1 on the chosen class of each of `rows` (what a rule that only chooses gives). */
function oneHot(chosen: readonly number[], rows: readonly number[], n: number, width: number): Scores {
  const data = new Float64Array(n * width);
  rows.forEach((i, k) => (data[i * width + chosen[k]] = 1));
  return { data, cols: width };
}

function fromMatrix(m: Matrix): Scores {
  return { data: Float64Array.from(m.data), cols: m.cols };
}

/**
 * A copy of `x` whose `shifted` rows are moved by -(mean over `from` - mean over `to`): the
 * offset that carries the average of `from` onto the average of `to`.
 */
function shiftCorrected(x: RowData, shifted: readonly number[], from: readonly number[], to: readonly number[]): RowData {
  const d = x.cols;
  const a = rowMean(x, from);
  const b = rowMean(x, to);
  const data = Float64Array.from(x.data);
  for (const i of shifted) for (let k = 0; k < d; k++) data[i * d + k] -= a[k] - b[k];
  return { cols: d, data };
}

/** Share of `rows` whose argmax over `classes` is their source label. */
function accuracy(s: Scores, rows: readonly number[], source: readonly number[], classes: readonly number[]): number {
  let right = 0;
  rows.forEach((i, k) => {
    let best = classes[0];
    for (const y of classes) if (s.data[i * s.cols + y] > s.data[i * s.cols + best]) best = y;
    if (best === source[k]) right++;
  });
  return right / rows.length;
}

interface Row {
  dataset: string;
  attack: string;
  /** Columns of the encoder features: 64 for stage 4 of a width-8 ResNet, 112 for stages 2-4. */
  featureDim: number;
  poisoned: number;
  /** Poisoned samples in D^_P: the ones the defense relabels. */
  relabelled: number;
  /** Per rule, right on every poisoned sample. */
  accuracy: Record<Rule, number>;
  /** Per rule, right on the poisoned samples in D^_P. */
  relabelledAccuracy: Record<Rule, number>;
}

/** One row per distinct density matrix of a poisoned audit. */
async function audits(): Promise<{ attack: string; density: string; features: string }[]> {
  const found = new Map<string, { attack: string; density: string; features: string }>();
  for (const { artifacts } of await storedReports(store)) {
    const { attack, density, features } = artifacts;
    if (!attack || !density || !features) continue;
    found.set(await artifactFileHash(store, density, 'density.f32'), { attack, density, features });
  }
  return [...found.values()];
}

const rows: Row[] = [];
const found = await audits();
const started = Date.now();
for (const [done, a] of found.entries()) {
  console.error(`relabel-rules: audit ${done + 1}/${found.length} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  const truth = JSON.parse(await readFile(join(store, a.attack, 'truth.json'), 'utf8')) as PoisonTruth;
  const t = truth.targetClass;
  // Clean-label attacks keep the true label: nothing to relabel.
  if (!truth.poisoned.length || truth.sourceLabels.every((s) => s === t)) continue;
  const data = await openDataset(join(store, a.attack, 'dataset'));
  try {
    const density = await readMatrix(join(store, a.density), 'density');
    const features = await readMatrix(join(store, a.features), 'features');
    if (onlyDim !== undefined && features.cols !== onlyDim) continue;
    const labels = data.labels;
    const n = labels.length;
    const width = density.cols;
    const foreign = Array.from({ length: width }, (_, y) => y).filter((y) => y !== t);
    const reference = Array.from({ length: n }, (_, i) => i).filter((i) => labels[i] !== t);
    const P = truth.poisoned;
    // D^_P as the defense draws it (the target told): the split's poisoned side, the lowest
    // alpha of the target by the default poison score.
    const score = poisonScores(density, labels, defaultAuditConfig.relabel.scoreReference);
    const split = splitAndRelabel(data.ids, labels, density, score, [knownVerdict(t, 'non-disruptive')], { alpha: ALPHA });
    const dP = split.flatMap((e, i) => (e.side === 'poisoned' ? [i] : []));
    const targetRows = Array.from({ length: n }, (_, i) => i).filter((i) => labels[i] === t);
    const inDP = new Set(dP);
    const relabelledP = P.filter((i) => inDP.has(i));
    const relabelledSource = relabelledP.map((i) => truth.sourceLabels[P.indexOf(i)]);

    const flows = fromMatrix(density);
    const zOwn = fromMatrix(density);
    for (const y of foreign) {
      const own = reference.filter((i) => labels[i] === y).map((i) => density.data[i * width + y]);
      const m = own.reduce((s, v) => s + v, 0) / own.length;
      const sd = Math.sqrt(own.reduce((s, v) => s + (v - m) ** 2, 0) / own.length) || 1;
      for (let i = 0; i < n; i++) zOwn.data[i * width + y] = (density.data[i * width + y] - m) / sd;
    }
    const featGauss = oneHot(sharedGaussians(features, labels, reference, width).choose(P, t), P, n, width);

    const all = Array.from({ length: n }, (_, i) => i);
    const pixels = await pixelRows(data);
    // Components of the foreign classes' genuine images, then every sample projected on them.
    const pcs = principalComponents(pixels, reference, components);
    const z = projectRows(pixels, all, pcs.mean, pcs.directions, components);
    const pixGauss = gaussianScores({ cols: components, data: z }, labels, reference, foreign, width);
    const fs = standardised(flows, reference, foreign);
    const ps = standardised(pixGauss, reference, foreign);
    const both: Scores = { data: fs.data.map((v, k) => v + ps.data[k]), cols: width };
    const shifted = shiftCorrected(features, targetRows, dP, reference);
    const featShift = oneHot(
      sharedGaussians(matrix(n, shifted.cols, Float32Array.from(shifted.data)), labels, reference, width).choose(P, t),
      P,
      n,
      width,
    );
    const pixShift = gaussianScores(
      shiftCorrected({ cols: components, data: z }, targetRows, dP, reference),
      labels,
      reference,
      foreign,
      width,
    );

    const scores: Record<Rule, Scores> = {
      flows,
      'flows, z on own class': zOwn,
      'features: shared Gaussian': featGauss,
      'features: 10-NN': knnScores(features, labels, reference, P, 10, width),
      'features: 30-NN': knnScores(features, labels, reference, P, 30, width),
      'pixels: Gaussian': pixGauss,
      'flows + pixels': both,
      'features: shared Gaussian, shift-corrected': featShift,
      'pixels: Gaussian, shift-corrected': pixShift,
    };
    const acc = Object.fromEntries(RULES.map((r) => [r, accuracy(scores[r], P, truth.sourceLabels, foreign)])) as Record<Rule, number>;
    const accDP = Object.fromEntries(
      RULES.map((r) => [r, relabelledP.length ? accuracy(scores[r], relabelledP, relabelledSource, foreign) : 0]),
    ) as Record<Rule, number>;
    rows.push({
      dataset: data.manifest.name,
      attack: truth.attack,
      featureDim: features.cols,
      poisoned: P.length,
      relabelled: relabelledP.length,
      accuracy: acc,
      relabelledAccuracy: accDP,
    });
  } finally {
    await data.close();
  }
}
rows.sort((a, b) => a.featureDim - b.featureDim || a.dataset.localeCompare(b.dataset) || a.poisoned - b.poisoned);

const pct = (x: number) => (100 * x).toFixed(1);
// Pooled per feature width: audits of different encoder stages are different methods.
type Pooled = Record<Rule, number> & { audits: number; samples: number };
const pooled: Record<string, { poisoned: Pooled; relabelled: Pooled }> = {};
for (const [title, field, count] of [
  ['every poisoned sample of the target', 'accuracy', 'poisoned'],
  ['the poisoned samples in D^_P (what the defense relabels)', 'relabelledAccuracy', 'relabelled'],
] as const) {
  console.log(`\n## Source class right, % of ${title}`);
  console.log(`| dataset | feature dim | samples | ${RULES.join(' | ')} |`);
  console.log(`|---|---|---|${RULES.map(() => '---|').join('')}`);
  for (const r of rows) console.log(`| ${r.dataset} | ${r.featureDim} | ${r[count]} | ${RULES.map((k) => pct(r[field][k])).join(' | ')} |`);
  for (const dim of [...new Set(rows.map((r) => r.featureDim))]) {
    const group = rows.filter((r) => r.featureDim === dim);
    const total = group.reduce((s, r) => s + r[count], 0);
    const acc = Object.fromEntries(RULES.map((k) => [k, group.reduce((s, r) => s + r[field][k] * r[count], 0) / total])) as Record<
      Rule,
      number
    >;
    (pooled[String(dim)] ??= {} as { poisoned: Pooled; relabelled: Pooled })[count] = { ...acc, audits: group.length, samples: total };
    console.log(`| all ${group.length} audits (per sample) | ${dim} | ${total} | ${RULES.map((k) => pct(acc[k])).join(' | ')} |`);
  }
}
if (values.json) {
  await writeFile(
    values.json,
    JSON.stringify(
      {
        bench: 'relabel-rules',
        date: new Date().toISOString(),
        store,
        components,
        alpha: ALPHA,
        featureDim: onlyDim ?? 'all',
        pooled,
        audits: rows,
      },
      null,
      1,
    ) + '\n',
  );
  console.log(`wrote ${values.json}`);
}
