// Density matrix (method.md step 5): log p_y(z_i) for every sample i and every class y, and the
// maximum foreign density v_y(z) used by the disruptive test. Log space only: densities of
// 512-d features underflow float64 by hundreds of orders of magnitude.
import type { ClassFlow } from './flow.js';
import { matrix, type Matrix } from './matrix.js';

/** N x C matrix whose column y is log p_y(features_i) under `perClassFlows[y]`, in nats. */
export function densityMatrix(perClassFlows: readonly ClassFlow[], features: Matrix): Matrix {
  const classes = perClassFlows.length;
  if (classes < 2) throw new Error(`densityMatrix: need flows for >= 2 classes, got ${classes}`);
  const out = matrix(features.rows, classes);
  perClassFlows.forEach((flow, y) => {
    if (flow.dim !== features.cols) throw new Error(`densityMatrix: flow ${y} expects ${flow.dim} features, got ${features.cols}`);
    const lp = flow.logProb(features);
    for (let i = 0; i < features.rows; i++) out.data[i * classes + y] = lp[i];
  });
  return out;
}

/** v_y(z_i) = max_{y' != y} log p_{y'}(z_i) for every row i of the density matrix. */
export function foreignDensity(density: Matrix, y: number): Float32Array {
  const { rows, cols, data } = density;
  if (cols < 2) throw new Error(`foreignDensity: density matrix has ${cols} class column(s), need >= 2`);
  if (!Number.isInteger(y) || y < 0 || y >= cols) throw new Error(`foreignDensity: class ${y} out of range 0..${cols - 1}`);
  const out = new Float32Array(rows);
  for (let i = 0; i < rows; i++) out[i] = maxForeign(data, i * cols, cols, y).value;
  return out;
}

/** The largest entry of row `offset..offset+cols` other than column `y`, and its column. */
export function maxForeign(data: Float32Array, offset: number, cols: number, y: number): { value: number; index: number } {
  let value = -Infinity;
  let index = -1;
  for (let c = 0; c < cols; c++) {
    if (c === y) continue;
    const d = data[offset + c];
    if (index < 0 || d > value) {
      value = d;
      index = c;
    }
  }
  return { value, index };
}
