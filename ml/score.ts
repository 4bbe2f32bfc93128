// Poison score (method.md step 7): s_y(z) = log p_y(z) - r_y(z), the log of a density ratio
// between the sample's own class y and a reference built from the other classes' flows.
//   'max-foreign'     r = max_{y' != y} log p_{y'}(z): the paper's ratio, own against the best
//                     other class.
//   'median-foreign'  r = median_{y' != y} log p_{y'}(z) (the default). The maximum of nine
//                     noisy densities is decided by whichever foreign flow happens to be broad
//                     near z, the median by how typical z is of the classes in general. Measured
//                     on the targets of 14 poison-label sets at 300 per class and of the 24
//                     poisoned nightly audits (docs/nd-normalization.md, "The poison score"): the
//                     lowest 15% (relabelled) went from 69% to 73% poisoned, and from 70% to 81%;
//                     the poisoned samples kept at the other end from 6.4% to 4.9%, and from 4.7%
//                     to 4.9%.
// The relabelling target stays argmax_{y' != y} log p_{y'}(z) (ml/relabel.ts) either way.
import type { ScoreReference } from './config.js';
import { maxForeign } from './density.js';
import type { Matrix } from './matrix.js';

/** The reference r_y of row `i` for class `y` over the other columns, without checks. */
function foreignReference(density: Matrix, i: number, y: number, reference: ScoreReference, scratch: Float64Array): number {
  const { cols, data } = density;
  if (reference === 'max-foreign') return maxForeign(data, i * cols, cols, y).value;
  let k = 0;
  for (let c = 0; c < cols; c++) if (c !== y) scratch[k++] = data[i * cols + c];
  const s = scratch.subarray(0, k).sort();
  return k % 2 ? s[k >> 1] : (s[(k >> 1) - 1] + s[k >> 1]) / 2;
}

/** The score of row `i` of the density matrix for class `y` (its label), without checks. */
export function poisonScoreOf(density: Matrix, i: number, y: number, reference: ScoreReference = 'median-foreign'): number {
  return density.data[i * density.cols + y] - foreignReference(density, i, y, reference, new Float64Array(density.cols));
}

export function poisonScores(density: Matrix, labels: Int32Array, reference: ScoreReference = 'median-foreign'): Float32Array {
  const { rows, cols } = density;
  if (labels.length !== rows) throw new Error(`poisonScores: ${labels.length} labels for ${rows} density rows`);
  if (cols < 2) throw new Error(`poisonScores: density matrix has ${cols} class column(s), need >= 2`);
  if (reference !== 'max-foreign' && reference !== 'median-foreign')
    throw new Error(`poisonScores: unknown score reference '${String(reference)}' (max-foreign or median-foreign)`);
  const out = new Float32Array(rows);
  const scratch = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const y = labels[i];
    if (y < 0 || y >= cols) throw new Error(`poisonScores: label ${y} of sample ${i} out of range 0..${cols - 1}`);
    out[i] = density.data[i * cols + y] - foreignReference(density, i, y, reference, scratch);
  }
  return out;
}
