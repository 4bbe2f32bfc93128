// Row-major float matrices: features (N x D), density matrices (N x C). Plain typed arrays
// so that they cross stage boundaries (files, workers) without tensors.

export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

export function matrix(rows: number, cols: number, data?: Float32Array): Matrix {
  const d = data ?? new Float32Array(rows * cols);
  if (d.length !== rows * cols) throw new Error(`matrix: ${d.length} values for ${rows}x${cols}`);
  return { rows, cols, data: d };
}

/** The given rows, in the given order, as a new matrix. */
export function selectRows(m: Matrix, rows: ArrayLike<number>): Matrix {
  const out = new Float32Array(rows.length * m.cols);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    out.set(m.data.subarray(r * m.cols, (r + 1) * m.cols), i * m.cols);
  }
  return { rows: rows.length, cols: m.cols, data: out };
}

/** A constant dimension's std is raised to this fraction of the mean std (no division by zero). */
const STD_FLOOR = 1e-3;

/** Per-dimension mean and floored standard deviation of the rows of `x`. */
export function featureMoments(x: Matrix): { mean: Float32Array; std: Float32Array } {
  const { rows, cols, data } = x;
  const mean = new Float64Array(cols);
  const sq = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) mean[j] += data[o + j];
  }
  for (let j = 0; j < cols; j++) mean[j] /= rows;
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) {
      const d = data[o + j] - mean[j];
      sq[j] += d * d;
    }
  }
  const std = new Float32Array(cols);
  let meanStd = 0;
  for (let j = 0; j < cols; j++) {
    std[j] = Math.sqrt(sq[j] / Math.max(1, rows - 1));
    meanStd += std[j] / cols;
  }
  const floor = Math.max(STD_FLOOR * meanStd, 1e-12);
  for (let j = 0; j < cols; j++) std[j] = Math.max(std[j], floor);
  return { mean: Float32Array.from(mean), std };
}

/**
 * The matrix with every column shifted and scaled to zero mean and unit variance. Features
 * are standardised over the whole dataset before the flows see them, so that NLLs are in units
 * that do not depend on the encoder's output scale (S_ND's ratio to the median needs that).
 */
export function standardizeColumns(m: Matrix): Matrix {
  const { mean, std } = featureMoments(m);
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const o = i * m.cols;
    for (let j = 0; j < m.cols; j++) out[o + j] = (m.data[o + j] - mean[j]) / std[j];
  }
  return { rows: m.rows, cols: m.cols, data: out };
}

/** The columns of `a` then those of `b`, row by row (same row count). */
export function concatColumns(a: Matrix, b: Matrix): Matrix {
  if (a.rows !== b.rows) throw new Error(`concatColumns: ${a.rows} rows and ${b.rows} rows`);
  const out = matrix(a.rows, a.cols + b.cols);
  for (let i = 0; i < a.rows; i++) {
    out.data.set(a.data.subarray(i * a.cols, (i + 1) * a.cols), i * out.cols);
    out.data.set(b.data.subarray(i * b.cols, (i + 1) * b.cols), i * out.cols + a.cols);
  }
  return out;
}
