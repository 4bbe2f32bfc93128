// The images' own pixels, summarised, as extra columns for the relabelling model
// (audit.relabel.pixelComponents). The encoder's features are global average pools: they keep
// what is in an image but not where (sky above, road below), and the SimCLR training that makes
// them invariant to crops and colour also makes them see less of the scene's layout. The
// leading principal components of a small thumbnail keep exactly that layout and colour.
// Measured on the stored 300-per-class audits (docs/results.md, "Pixels beside the features"):
// the shared-covariance Gaussians on [features, pixel components] relabel more poisoned samples
// to their source class than on either alone.
//
// Thumbnails: each image is box-averaged to at most THUMBNAIL_SIDE x THUMBNAIL_SIDE (every
// source pixel counts in exactly one cell), so the cost does not grow with the image size. The
// principal directions are fitted on at most `maxFitRows` evenly spaced samples, then every
// sample is projected in a second, streaming pass: an ImageNet-size dataset never holds more
// than the fit rows' thumbnails and the N x k result.
import type { ImageSource } from '../data/types.js';
import { principalComponents, projectRows } from './defenses/pca.js';
import { throwIfAborted, yieldToEventLoop } from './loop.js';
import { matrix, standardizeColumns, type Matrix } from './matrix.js';

/** Thumbnail side: 16 x 16 x 3 = 768 values per image. */
export const THUMBNAIL_SIDE = 16;
/** Samples the principal directions are fitted on, at most: the scatter costs O(m D^2), D = 768. */
export const MAX_FIT_ROWS = 5_000;
/**
 * Subspace iterations for the directions (ml/defenses/pca.ts). The relabelling model's shared
 * covariance makes it blind to any rotation inside the span of the k directions, so only the
 * span matters, and on CIFAR-10 thumbnails it has settled long before the individual vectors
 * (k = 64, 3,000 images: 99.9% overlap with the converged span, 99.999% of its variance, at
 * 30 iterations, a fifth of the time of 150). Fit and projection are one synchronous step of
 * a few seconds, well inside the relabel stage's 30 s heartbeat timeout.
 */
const ITERATIONS = 30;
const READ_BATCH = 256;

export interface PixelComponentOptions {
  /** Thumbnail side (default THUMBNAIL_SIDE; never above the image's own size). */
  side?: number;
  /** Samples to fit the directions on (default MAX_FIT_ROWS). */
  maxFitRows?: number;
  signal?: AbortSignal;
  /** After each batch read, with the samples done and the total of both passes. */
  onBatch?: (done: number, total: number) => void;
}

/** The sample indices the directions are fitted on: `m` evenly spaced rows of `n` (all when m >= n). */
export function fitRowsOf(n: number, m: number): Int32Array {
  if (m >= n) return Int32Array.from({ length: n }, (_, i) => i);
  return Int32Array.from({ length: m }, (_, j) => Math.floor((j * n) / m));
}

/**
 * `n` uint8 HWC RGB images of height x width box-averaged to th x tw (th <= height, tw <=
 * width), values scaled to [0, 1], one row per image.
 */
export function thumbnails(pixels: Uint8Array, n: number, height: number, width: number, th: number, tw: number): Float32Array {
  if (pixels.length !== n * height * width * 3)
    throw new Error(`thumbnails: ${pixels.length} bytes for ${n} images of ${height}x${width}x3`);
  const cellOfY = Int32Array.from({ length: height }, (_, y) => Math.floor((y * th) / height));
  const cellOfX = Int32Array.from({ length: width }, (_, x) => Math.floor((x * tw) / width));
  // Pixels per cell (the same for every image).
  const area = new Float32Array(th * tw);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) area[cellOfY[y] * tw + cellOfX[x]]++;
  const d = th * tw * 3;
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let y = 0; y < height; y++) {
      const src = (i * height + y) * width * 3;
      const row = cellOfY[y] * tw;
      for (let x = 0; x < width; x++) {
        const cell = o + (row + cellOfX[x]) * 3;
        const p = src + x * 3;
        out[cell] += pixels[p];
        out[cell + 1] += pixels[p + 1];
        out[cell + 2] += pixels[p + 2];
      }
    }
    for (let c = 0; c < th * tw; c++) {
      const s = 1 / (255 * area[c]);
      out[o + c * 3] *= s;
      out[o + c * 3 + 1] *= s;
      out[o + c * 3 + 2] *= s;
    }
  }
  return out;
}

/**
 * How many components a dataset of `n` samples of height x width gives when `k` are asked for:
 * no more than the thumbnail has values, nor than the fit rows minus one (a small dataset gets
 * fewer, rather than an error).
 */
export function componentsFor(
  k: number,
  n: number,
  height: number,
  width: number,
  o: Pick<PixelComponentOptions, 'side' | 'maxFitRows'> = {},
): number {
  const side = o.side ?? THUMBNAIL_SIDE;
  return Math.max(0, Math.min(k, Math.min(side, height) * Math.min(side, width) * 3, Math.min(n, o.maxFitRows ?? MAX_FIT_ROWS) - 1));
}

/**
 * The leading principal components of every sample's thumbnail (row i = sample i), each column
 * standardised over the dataset like the encoder's features: `componentsFor(k, ...)` of them.
 */
export async function pixelComponents(source: ImageSource, k: number, o: PixelComponentOptions = {}): Promise<Matrix> {
  if (!(Number.isInteger(k) && k >= 1)) throw new Error(`pixelComponents: k = ${k} is not a positive integer`);
  const th = Math.min(o.side ?? THUMBNAIL_SIDE, source.height);
  const tw = Math.min(o.side ?? THUMBNAIL_SIDE, source.width);
  const d = th * tw * 3;
  const n = source.size;
  const fit = fitRowsOf(n, o.maxFitRows ?? MAX_FIT_ROWS);
  const used = componentsFor(k, n, source.height, source.width, o);
  if (used < 1) throw new Error(`pixelComponents: ${n} sample(s) give no principal component`);
  const allFit = fit.length === n;
  const total = allFit ? n : fit.length + n;
  let done = 0;
  const read = async (idx: Int32Array, sink: (start: number, rows: Float32Array) => void) => {
    for (let start = 0; start < idx.length; start += READ_BATCH) {
      throwIfAborted(o.signal, `pixelComponents: sample ${start}/${idx.length}`);
      const batch = idx.subarray(start, start + READ_BATCH);
      sink(start, thumbnails(await source.readImages(batch), batch.length, source.height, source.width, th, tw));
      o.onBatch?.((done += batch.length), total);
      await yieldToEventLoop();
    }
  };
  const fitted = matrix(fit.length, d);
  await read(fit, (start, rows) => fitted.data.set(rows, start * d));
  const every = Array.from({ length: fit.length }, (_, i) => i);
  const { mean, directions, scores } = principalComponents(fitted, every, used, ITERATIONS);
  const out = matrix(n, used);
  if (allFit) out.data.set(scores);
  else
    await read(
      Int32Array.from({ length: n }, (_, i) => i),
      (start, rows) => {
        const batch = { cols: d, data: rows };
        const m = rows.length / d;
        out.data.set(
          projectRows(
            batch,
            Array.from({ length: m }, (_, j) => j),
            mean,
            directions,
            used,
          ),
          start * used,
        );
      },
    );
  return standardizeColumns(out);
}
