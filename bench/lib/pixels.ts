// Raw pixels as features, for the benches' pixel floors (matrix, relabel-rules, encoder-recipe).
import type { ImageSource } from '../../data/types.js';
import { matrix, type Matrix } from '../../ml/matrix.js';

/** Every image of `source` as one row of its pixels scaled to [0, 1] (height x width x 3 columns). */
export async function pixelRows(source: ImageSource): Promise<Matrix> {
  const raw = await source.readImages(Array.from({ length: source.size }, (_, i) => i));
  const out = matrix(source.size, raw.length / source.size);
  for (let i = 0; i < raw.length; i++) out.data[i] = raw[i] / 255;
  return out;
}
