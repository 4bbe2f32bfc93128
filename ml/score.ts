// Poison score (method.md step 7): s_y(z) = log p_y(z) - max_{y' != y} log p_{y'}(z), the log of
// the paper's density ratio, with y the sample's own label.
import { maxForeign } from './density.js';
import type { Matrix } from './matrix.js';

/** The score of row `i` of the density matrix for class `y` (its label), without checks. */
export function poisonScoreOf(density: Matrix, i: number, y: number): number {
  const { cols, data } = density;
  return data[i * cols + y] - maxForeign(data, i * cols, cols, y).value;
}

export function poisonScores(density: Matrix, labels: Int32Array): Float32Array {
  const { rows, cols } = density;
  if (labels.length !== rows) throw new Error(`poisonScores: ${labels.length} labels for ${rows} density rows`);
  if (cols < 2) throw new Error(`poisonScores: density matrix has ${cols} class column(s), need >= 2`);
  const out = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    const y = labels[i];
    if (y < 0 || y >= cols) throw new Error(`poisonScores: label ${y} of sample ${i} out of range 0..${cols - 1}`);
    out[i] = poisonScoreOf(density, i, y);
  }
  return out;
}
