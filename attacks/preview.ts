// Sample images of a poisoning to look at (attacks.md: "sample images (PNG grid)"): one row per
// sample, columns clean | as stored in the poisoned set | |difference| amplified | clean image
// with the test-time trigger. Invisible triggers (Blend, WaNet, ISSBA, LC's perturbation) show
// in the difference column.
import sharp from 'sharp';
import type { ImageSource, PoisonTruth } from '../data/types.js';
import { Rng } from '../ml/random.js';
import type { Attack } from './types.js';

export interface PreviewOptions {
  /** Poisoned samples shown (6), followed by up to `covers` covers (2). */
  rows?: number;
  covers?: number;
  /** |poisoned - clean| is multiplied by this (8) so that an 8/255 residual is visible. */
  amplify?: number;
  /** Each image is scaled up by nearest neighbour to at least this many pixels (96). */
  tile?: number;
}

const GAP = 2;
const COLUMNS = 4;

/** Raw RGB pixels of the grid and its size (what `writePreview` encodes). */
export async function previewPixels(
  clean: ImageSource,
  poisoned: ImageSource,
  truth: PoisonTruth,
  attack: Attack,
  o: PreviewOptions = {},
): Promise<{ pixels: Uint8Array; width: number; height: number; rows: number[] }> {
  const size = clean.height;
  if (clean.width !== size || poisoned.height !== size || poisoned.width !== size)
    throw new Error('preview: images must be square and of one size');
  const amplify = o.amplify ?? 8;
  const scale = Math.max(1, Math.ceil((o.tile ?? 96) / size));
  const rows = [...truth.poisoned.slice(0, o.rows ?? 6), ...(truth.cover ?? []).slice(0, o.covers ?? 2)];
  if (rows.length === 0) throw new Error('preview: nothing was poisoned');
  const cell = size * scale;
  const width = COLUMNS * cell + (COLUMNS + 1) * GAP;
  const height = rows.length * cell + (rows.length + 1) * GAP;
  const out = new Uint8Array(width * height * 3).fill(255);
  const px = size * size * 3;
  const before = await clean.readImages(rows);
  const after = await poisoned.readImages(rows);
  const put = (img: Uint8Array, row: number, col: number) => {
    const top = GAP + row * (cell + GAP);
    const left = GAP + col * (cell + GAP);
    for (let y = 0; y < cell; y++) {
      for (let x = 0; x < cell; x++) {
        const src = (Math.floor(y / scale) * size + Math.floor(x / scale)) * 3;
        out.set(img.subarray(src, src + 3), ((top + y) * width + left + x) * 3);
      }
    }
  };
  rows.forEach((_, r) => {
    const a = before.slice(r * px, (r + 1) * px);
    const b = after.subarray(r * px, (r + 1) * px);
    const diff = new Uint8Array(px);
    for (let i = 0; i < px; i++) diff[i] = Math.min(255, Math.abs(b[i] - a[i]) * amplify);
    put(a, r, 0);
    put(b, r, 1);
    put(diff, r, 2);
    put(attack.applyTest(a, size, size, new Rng(truth.poisoned.length + r)), r, 3);
  });
  return { pixels: out, width, height, rows };
}

/** Writes the preview grid as a PNG file. */
export async function writePreview(
  file: string,
  clean: ImageSource,
  poisoned: ImageSource,
  truth: PoisonTruth,
  attack: Attack,
  o: PreviewOptions = {},
): Promise<void> {
  const { pixels, width, height } = await previewPixels(clean, poisoned, truth, attack, o);
  await sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toFile(file);
}
