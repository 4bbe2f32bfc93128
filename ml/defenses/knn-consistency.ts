// k-NN label consistency, a cheap baseline in the spirit of the Deep k-NN defense (Peri et al.,
// "Deep k-NN Defense against Clean-label Data Poisoning Attacks", ECCV workshops 2020): a sample
// whose nearest neighbours in feature space mostly carry another label is suspect. Here:
// cosine similarity over all samples (every class), the k nearest other samples; a sample is
// inconsistent when more than `disagreeFraction` of them carry another label. An inconsistent
// sample is relabelled to its neighbours' most common other label when at least
// `relabelFraction` of the k carry it (a clear majority says what it is), and removed otherwise.
//
// Sides: both relabelled and removed samples are 'poisoned': the check has decided that the
// label is wrong in both cases, it only lacks a replacement label for the removed ones (as the
// paper's method removes, not relabels, a disruptive target's poisoned end). 'uncertain' would
// mean that it could not decide, which no sample here is. Consistent samples are kept, 'clean'.
// Features and labels only: the flow method's detections are not read.
//
// Cost: all pairs, O(N^2 D) time, but in tiles of TILE x TILE rows and each pair once (cosine is
// symmetric), so memory is O(N k) beside the features; no N x N matrix exists at any time.
import type { KnnConsistencyConfig } from '../config.js';
import type { CleansedEntry } from '../audit-report.js';
import type { Matrix } from '../matrix.js';
import { className, requireConfig } from './common.js';
import type { Defense } from './types.js';

const WHO = 'knn-consistency';
/** Rows per tile side: 64 rows of D = 512 floats (128 KiB) stay in a core's L2 cache. */
const TILE = 64;

/** The rows scaled to unit length (a zero row stays zero: similarity 0 to everything). */
function unitRows(x: Matrix): Float32Array {
  const { rows, cols, data } = x;
  const u = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let s = 0;
    for (let t = 0; t < cols; t++) s += data[o + t] * data[o + t];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let t = 0; t < cols; t++) u[o + t] = data[o + t] * inv;
  }
  return u;
}

/**
 * The k nearest other samples of every sample by cosine similarity: N x k indices, each row
 * most similar first, equal similarities by lower index (a total order, so the result does
 * not depend on the order pairs are visited in). Requires 1 <= k <= N - 1.
 */
export function nearestNeighbours(features: Matrix, k: number): Int32Array {
  const n = features.rows;
  const d = features.cols;
  if (!(Number.isInteger(k) && k >= 1 && k <= n - 1)) throw new Error(`nearestNeighbours: k = ${k} for ${n} samples (1..${n - 1})`);
  const u = unitRows(features);
  const sim = new Float64Array(n * k).fill(-Infinity);
  const idx = new Int32Array(n * k).fill(-1);
  // worst[i] = sim of i's current k-th neighbour: most offers fail this one comparison.
  const worst = new Float64Array(n).fill(-Infinity);

  const offer = (i: number, j: number, s: number): void => {
    const base = i * k;
    let p = base + k - 1;
    if (s < worst[i] || (s === worst[i] && j > idx[p])) return;
    while (p > base && (sim[p - 1] < s || (sim[p - 1] === s && idx[p - 1] > j))) {
      sim[p] = sim[p - 1];
      idx[p] = idx[p - 1];
      p--;
    }
    sim[p] = s;
    idx[p] = j;
    worst[i] = sim[base + k - 1];
  };

  for (let bi = 0; bi < n; bi += TILE) {
    const iEnd = Math.min(n, bi + TILE);
    for (let bj = bi; bj < n; bj += TILE) {
      const jEnd = Math.min(n, bj + TILE);
      let i = bi;
      if (bj !== bi) {
        // Four rows of the tile at a time against each column row: one load of u_j serves four dot products.
        for (; i + 3 < iEnd; i += 4) {
          const o0 = i * d;
          const o1 = o0 + d;
          const o2 = o1 + d;
          const o3 = o2 + d;
          for (let j = bj; j < jEnd; j++) {
            const q = j * d;
            let s0 = 0;
            let s1 = 0;
            let s2 = 0;
            let s3 = 0;
            for (let t = 0; t < d; t++) {
              const b = u[q + t];
              s0 += u[o0 + t] * b;
              s1 += u[o1 + t] * b;
              s2 += u[o2 + t] * b;
              s3 += u[o3 + t] * b;
            }
            // The cheap test inline; `offer` only for a candidate that may enter a list.
            if (s0 >= worst[i]) offer(i, j, s0);
            if (s1 >= worst[i + 1]) offer(i + 1, j, s1);
            if (s2 >= worst[i + 2]) offer(i + 2, j, s2);
            if (s3 >= worst[i + 3]) offer(i + 3, j, s3);
            const wj = worst[j];
            if (s0 >= wj) offer(j, i, s0);
            if (s1 >= wj) offer(j, i + 1, s1);
            if (s2 >= wj) offer(j, i + 2, s2);
            if (s3 >= wj) offer(j, i + 3, s3);
          }
        }
      }
      // The rest row by row; in a diagonal tile, each pair once (j > i).
      for (; i < iEnd; i++) {
        const o = i * d;
        for (let j = bj === bi ? i + 1 : bj; j < jEnd; j++) {
          const q = j * d;
          let s = 0;
          for (let t = 0; t < d; t++) s += u[o + t] * u[q + t];
          offer(i, j, s);
          offer(j, i, s);
        }
      }
    }
  }
  return idx;
}

export const knnConsistency: Defense<KnnConsistencyConfig> = {
  name: WHO,
  description:
    'baseline (k-NN label consistency, after Peri et al. 2020): a sample most of whose k cosine-nearest neighbours carry another label is relabelled to their label when a clear majority (relabelFraction) shares it, removed otherwise',
  configOf: (audit) => audit.knnConsistency,
  split(input, config) {
    const { k, disagreeFraction, relabelFraction } = config;
    const { features, labels, ids, classNames } = input;
    const n = labels.length;
    requireConfig(Number.isInteger(k) && k >= 1 && k <= n - 1, WHO, 'k', `an integer in 1..${n - 1} (N - 1)`, k);
    requireConfig(disagreeFraction >= 0 && disagreeFraction < 1, WHO, 'disagreeFraction', 'in [0, 1)', disagreeFraction);
    requireConfig(relabelFraction > 0.5 && relabelFraction <= 1, WHO, 'relabelFraction', 'in (0.5, 1] (a majority)', relabelFraction);
    const classes = classNames.length;
    for (let i = 0; i < n; i++) {
      if (!(labels[i] >= 0 && labels[i] < classes))
        throw new Error(`${WHO}: label ${labels[i]} of sample ${i} out of range 0..${classes - 1}`);
    }
    const neighbours = nearestNeighbours(features, k);
    // Counts compared as integers (with a hair of slack for fractions like 0.7 * 10).
    const disagreeAbove = disagreeFraction * k + 1e-9;
    const relabelAtLeast = relabelFraction * k - 1e-9;
    const counts = new Int32Array(classes);
    const out = new Array<CleansedEntry>(n);
    for (let i = 0; i < n; i++) {
      const y = labels[i];
      counts.fill(0);
      for (let r = 0; r < k; r++) counts[labels[neighbours[i * k + r]]]++;
      const others = k - counts[y];
      const base = { id: ids[i], label: y, score: others / k };
      const name = className(classNames, y);
      if (others <= disagreeAbove) {
        out[i] = {
          ...base,
          action: 'keep',
          side: 'clean',
          reason: `k-NN consistency: ${counts[y]} of ${k} nearest neighbours labelled ${name}: kept`,
        };
        continue;
      }
      // The most common other label; ties by lower class index.
      let top = y === 0 ? 1 : 0;
      for (let c = 0; c < classes; c++) if (c !== y && counts[c] > counts[top]) top = c;
      const why = `k-NN consistency: ${others} of ${k} nearest neighbours not labelled ${name}, ${counts[top]} labelled ${className(classNames, top)}`;
      out[i] =
        counts[top] >= relabelAtLeast
          ? { ...base, action: 'relabel', side: 'poisoned', newLabel: top, reason: `${why} -> relabelled to ${className(classNames, top)}` }
          : { ...base, action: 'drop', side: 'poisoned', reason: `${why}, no clear majority -> removed` };
    }
    return out;
  },
};
