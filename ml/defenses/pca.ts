// Principal directions of one class's features, for the feature-space baselines: spectral
// signatures needs the top right-singular vector of the centred class matrix, activation
// clustering its top 10 for the reduction. Both are the top eigenvectors of the class's D x D
// scatter matrix M^T M, found by subspace iteration with Rayleigh-Ritz; deterministic (fixed
// start, fixed iteration cap) and O(m D^2) in time for a class of m, with no m x D copy.
import type { Matrix } from '../matrix.js';
import { Rng } from '../random.js';

/** Extra directions iterated beside the k wanted: convergence goes as lambda_{k+p+1} / lambda_k. */
const OVERSAMPLE = 4;
/** Stop when every wanted Ritz pair's residual |A v - lambda v| is below this times lambda_1. */
const TOLERANCE = 1e-7;
/**
 * Iteration cap. Reached only when eigenvalues are nearly equal (an isotropic class), where any
 * direction in the near-degenerate span is as good as another; the cap keeps D = 512 fast.
 */
const MAX_ITERATIONS = 150;
/** Seed of the start vectors: fixed, so the directions depend on the features alone. */
const START_SEED = 0x5ca1ab1e;

/** Row-major values with a column count: a Matrix, or double-precision coordinates. */
export type RowData = Pick<Matrix, 'cols'> & { data: ArrayLike<number> };

/** Mean of the given rows of `x`, in double precision. */
export function rowMean(x: RowData, rows: readonly number[]): Float64Array {
  const { cols, data } = x;
  const mean = new Float64Array(cols);
  for (const r of rows) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) mean[j] += data[o + j];
  }
  if (rows.length) for (let j = 0; j < cols; j++) mean[j] /= rows.length;
  return mean;
}

/** Scatter matrix sum_i (x_i - mean)(x_i - mean)^T over the given rows: D x D, row-major, symmetric. */
export function scatterMatrix(x: RowData, rows: readonly number[], mean: Float64Array): Float64Array {
  const d = x.cols;
  const out = new Float64Array(d * d);
  const r = new Float64Array(d);
  for (const i of rows) {
    const o = i * d;
    for (let j = 0; j < d; j++) r[j] = x.data[o + j] - mean[j];
    // Upper triangle only; mirrored below.
    for (let a = 0; a < d; a++) {
      const ra = r[a];
      if (ra === 0) continue;
      const row = a * d;
      for (let b = a; b < d; b++) out[row + b] += ra * r[b];
    }
  }
  for (let a = 0; a < d; a++) for (let b = 0; b < a; b++) out[a * d + b] = out[b * d + a];
  return out;
}

/** Eigen-decomposition of a small symmetric p x p matrix by cyclic Jacobi: values descending,
 *  vectors as the ROWS of the returned matrix. */
export function symmetricEigen(h: Float64Array, p: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(h);
  const v = new Float64Array(p * p);
  for (let i = 0; i < p; i++) v[i * p + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < p; i++) {
      diag += a[i * p + i] * a[i * p + i];
      for (let j = i + 1; j < p; j++) off += a[i * p + j] * a[i * p + j];
    }
    if (off <= 1e-24 * Math.max(diag, 1e-300)) break;
    for (let i = 0; i < p; i++) {
      for (let j = i + 1; j < p; j++) {
        const aij = a[i * p + j];
        if (aij === 0) continue;
        const theta = (a[j * p + j] - a[i * p + i]) / (2 * aij);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // A <- J^T A J on rows/columns i and j.
        for (let k = 0; k < p; k++) {
          const aki = a[k * p + i];
          const akj = a[k * p + j];
          a[k * p + i] = c * aki - s * akj;
          a[k * p + j] = s * aki + c * akj;
        }
        for (let k = 0; k < p; k++) {
          const aik = a[i * p + k];
          const ajk = a[j * p + k];
          a[i * p + k] = c * aik - s * ajk;
          a[j * p + k] = s * aik + c * ajk;
        }
        // Eigenvectors accumulate as rows: row i / j of V rotate together.
        for (let k = 0; k < p; k++) {
          const vik = v[i * p + k];
          const vjk = v[j * p + k];
          v[i * p + k] = c * vik - s * vjk;
          v[j * p + k] = s * vik + c * vjk;
        }
      }
    }
  }
  const order = Array.from({ length: p }, (_, i) => i).sort((x, y) => a[y * p + y] - a[x * p + x] || x - y);
  const values = new Float64Array(p);
  const vectors = new Float64Array(p * p);
  order.forEach((src, dst) => {
    values[dst] = a[src * p + src];
    vectors.set(v.subarray(src * p, src * p + p), dst * p);
  });
  return { values, vectors };
}

/**
 * Orthonormalises the rows of `v` (p x n) in place by modified Gram-Schmidt. A row that
 * vanishes (rank below p) is replaced by a fresh draw from `rng`, so the basis stays complete.
 */
function orthonormalizeRows(v: Float64Array, p: number, n: number, rng: Rng): void {
  for (let i = 0; i < p; i++) {
    const row = v.subarray(i * n, i * n + n);
    for (let attempt = 0; ; attempt++) {
      const before = Math.sqrt(dot(row, row));
      for (let j = 0; j < i; j++) {
        const other = v.subarray(j * n, j * n + n);
        const c = dot(row, other);
        for (let t = 0; t < n; t++) row[t] -= c * other[t];
      }
      const norm = Math.sqrt(dot(row, row));
      if (norm > 1e-10 * before && norm > 1e-300) {
        for (let t = 0; t < n; t++) row[t] /= norm;
        break;
      }
      if (attempt > 10) throw new Error(`orthonormalizeRows: cannot complete a basis of ${p} in ${n} dimensions`);
      for (let t = 0; t < n; t++) row[t] = rng.normal();
    }
  }
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let t = 0; t < a.length; t++) s += a[t] * b[t];
  return s;
}

/**
 * The k leading eigenpairs of a symmetric positive semi-definite n x n matrix `a` (row-major):
 * values descending, vectors as rows of a k x n matrix, each of unit length, with the sign that
 * makes its largest-magnitude entry positive (so repeated runs agree exactly).
 */
export function topEigenvectors(
  a: Float64Array,
  n: number,
  k: number,
  maxIterations = MAX_ITERATIONS,
): { values: Float64Array; vectors: Float64Array } {
  if (!(Number.isInteger(k) && k >= 1 && k <= n)) throw new Error(`topEigenvectors: k = ${k} outside 1..${n}`);
  const p = Math.min(n, k + OVERSAMPLE);
  const rng = new Rng(START_SEED);
  let v: Float64Array = new Float64Array(p * n);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  orthonormalizeRows(v, p, n, rng);
  const w = new Float64Array(p * n);
  const h = new Float64Array(p * p);
  let ritz: Float64Array = new Float64Array(p * n);
  let ritzA: Float64Array = new Float64Array(p * n);
  let values: Float64Array = new Float64Array(p);
  for (let iter = 0; iter < maxIterations; iter++) {
    // W = V A (A symmetric: row i of W is A v_i).
    w.fill(0);
    for (let i = 0; i < p; i++) {
      const vi = i * n;
      for (let r = 0; r < n; r++) {
        const c = v[vi + r];
        if (c === 0) continue;
        const ar = r * n;
        for (let t = 0; t < n; t++) w[vi + t] += c * a[ar + t];
      }
    }
    // Rayleigh-Ritz in span(V): H = V A V^T = V W^T.
    for (let i = 0; i < p; i++) {
      for (let j = i; j < p; j++) {
        const s = dot(v.subarray(i * n, i * n + n), w.subarray(j * n, j * n + n));
        h[i * p + j] = s;
        h[j * p + i] = s;
      }
    }
    const eig = symmetricEigen(h, p);
    values = eig.values;
    // Ritz vectors S V and their images S W.
    ritz = new Float64Array(p * n);
    ritzA = new Float64Array(p * n);
    for (let i = 0; i < p; i++) {
      for (let j = 0; j < p; j++) {
        const s = eig.vectors[i * p + j];
        if (s === 0) continue;
        for (let t = 0; t < n; t++) {
          ritz[i * n + t] += s * v[j * n + t];
          ritzA[i * n + t] += s * w[j * n + t];
        }
      }
    }
    let converged = true;
    const scale = Math.max(Math.abs(values[0]), 1e-300);
    for (let i = 0; i < k && converged; i++) {
      let res = 0;
      for (let t = 0; t < n; t++) {
        const e = ritzA[i * n + t] - values[i] * ritz[i * n + t];
        res += e * e;
      }
      if (Math.sqrt(res) > TOLERANCE * scale) converged = false;
    }
    if (converged) break;
    v = ritzA.slice();
    orthonormalizeRows(v, p, n, rng);
  }
  const vectors = ritz.slice(0, k * n);
  for (let i = 0; i < k; i++) {
    const row = vectors.subarray(i * n, i * n + n);
    let big = 0;
    for (let t = 1; t < n; t++) if (Math.abs(row[t]) > Math.abs(row[big])) big = t;
    if (row[big] < 0) for (let t = 0; t < n; t++) row[t] = -row[t];
  }
  return { values: values.slice(0, k), vectors };
}

/**
 * The first k principal components of the given rows: the class mean, the k leading
 * directions (k x D, rows) and each row's coordinates along them (m x k, in `rows` order).
 */
export function principalComponents(
  x: Matrix,
  rows: readonly number[],
  k: number,
  maxIterations = MAX_ITERATIONS,
): { mean: Float64Array; directions: Float64Array; values: Float64Array; scores: Float64Array } {
  const mean = rowMean(x, rows);
  const { values, vectors } = topEigenvectors(scatterMatrix(x, rows, mean), x.cols, k, maxIterations);
  return { mean, directions: vectors, values, scores: projectRows(x, rows, mean, vectors, k) };
}

/** Coordinates of the given rows, centred on `mean`, along k directions (k x D, rows): rows.length x k. */
export function projectRows(x: RowData, rows: readonly number[], mean: Float64Array, directions: Float64Array, k: number): Float64Array {
  const d = x.cols;
  const scores = new Float64Array(rows.length * k);
  const r = new Float64Array(d);
  rows.forEach((i, m) => {
    const o = i * d;
    for (let j = 0; j < d; j++) r[j] = x.data[o + j] - mean[j];
    for (let c = 0; c < k; c++) scores[m * k + c] = dot(r, directions.subarray(c * d, c * d + d));
  });
  return scores;
}
