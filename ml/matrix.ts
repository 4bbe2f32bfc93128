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

export function row(m: Matrix, r: number): Float32Array {
  return m.data.subarray(r * m.cols, (r + 1) * m.cols);
}
