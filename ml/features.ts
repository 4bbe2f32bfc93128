// Paper step 3: z = f(x) for every sample, and the batched inference loop that predictions
// share. BatchNorm runs in inference mode (moving statistics); images stream batch by batch.
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { toFloatImages } from './augment.js';
import { throwIfAborted, yieldToEventLoop } from './loop.js';
import { matrix, standardizeColumns, type Matrix } from './matrix.js';

export interface InferenceOptions {
  /** Images per forward pass (default 128). */
  batchSize?: number;
  /**
   * Each row is the mean of the encoder's outputs on the image and on its horizontal mirror.
   * SimCLR is trained to map both to one point (the flip is one of its augmentations), so the
   * mean keeps what they share and averages out what it failed to make invariant.
   */
  flipAverage?: boolean;
  signal?: AbortSignal;
  onBatch?: (done: number, total: number) => void | Promise<void>;
}

/** Throws unless `model` takes [N, source.height, source.width, 3] images. */
export function checkImageInput(model: tfl.LayersModel, height: number, width: number, what: string): void {
  const shape = model.inputs[0]?.shape;
  if (model.inputs.length !== 1 || !shape || shape.length !== 4 || shape[1] !== height || shape[2] !== width || shape[3] !== 3) {
    const shown = shape ? shape.map((d) => d ?? 'N').join(', ') : '?';
    throw new Error(`${what}: model takes input [${shown}], images are [N, ${height}, ${width}, 3]`);
  }
}

/**
 * A frozen encoder outside tfjs (ml/onnx-encoder.ts): a batch of uint8 HWC images in, one
 * float32 feature row per image out. It does its own resizing and normalisation.
 */
export interface BatchEncoder {
  /** For error messages. */
  readonly name: string;
  /** Images per call the model requires (an export with a fixed batch dimension); else any. */
  readonly fixedBatch?: number;
  encodeBatch(pixels: Uint8Array, n: number, height: number, width: number): Promise<{ rows: Float32Array; cols: number }>;
  dispose(): Promise<void>;
}

/** What features are computed with: a tfjs model (SimCLR, pretrained) or a BatchEncoder. */
export type FeatureEncoder = tfl.LayersModel | BatchEncoder;

export function isBatchEncoder(e: FeatureEncoder): e is BatchEncoder {
  return 'encodeBatch' in e;
}

/**
 * Runs `model` over every sample in order, `batchSize` at a time, and hands each batch's output
 * rows (float32, row-major) to `sink` with the index of the batch's first sample.
 */
export async function inferBatches(
  model: FeatureEncoder,
  source: ImageSource,
  o: InferenceOptions,
  what: string,
  sink: (start: number, rows: Float32Array, cols: number) => void,
): Promise<void> {
  const batchSize = (isBatchEncoder(model) ? model.fixedBatch : undefined) ?? o.batchSize ?? 128;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`${what}: batchSize must be a positive integer, got ${batchSize}`);
  if (!isBatchEncoder(model)) checkImageInput(model, source.height, source.width, what);
  const total = Math.ceil(source.size / batchSize);
  for (let b = 0; b < total; b++) {
    throwIfAborted(o.signal, `${what} batch ${b + 1}/${total}`);
    const start = b * batchSize;
    const idx = Int32Array.from({ length: Math.min(batchSize, source.size - start) }, (_, i) => start + i);
    const pixels = await source.readImages(idx);
    const run = (images: Uint8Array) =>
      isBatchEncoder(model)
        ? encodeBatch(model, images, idx.length, source, batchSize)
        : predictBatch(model, images, idx.length, source, what);
    const { rows, cols } = await run(pixels);
    if (o.flipAverage) {
      const mirrored = (await run(mirrorImages(pixels, idx.length, source.height, source.width))).rows;
      for (let k = 0; k < rows.length; k++) rows[k] = (rows[k] + mirrored[k]) / 2;
    }
    sink(start, rows, cols);
    await o.onBatch?.(b + 1, total);
    await yieldToEventLoop();
  }
}

async function predictBatch(model: tfl.LayersModel, pixels: Uint8Array, n: number, source: ImageSource, what: string) {
  const out = tf.tidy(() => {
    const y = model.predict(toFloatImages(pixels, n, source.height, source.width)) as tf.Tensor;
    if (y.rank !== 2) throw new Error(`${what}: model output has shape [${y.shape}], expected [N, D]`);
    return y;
  });
  const rows = (await out.data()) as Float32Array;
  const cols = out.shape[1] as number;
  out.dispose();
  return { rows, cols };
}

/** `n` uint8 HWC RGB images, each mirrored left to right. */
export function mirrorImages(pixels: Uint8Array, n: number, height: number, width: number): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let row = 0; row < n * height; row++) {
    const base = row * width * 3;
    for (let x = 0; x < width; x++) {
      const from = base + x * 3;
      const to = base + (width - 1 - x) * 3;
      out[to] = pixels[from];
      out[to + 1] = pixels[from + 1];
      out[to + 2] = pixels[from + 2];
    }
  }
  return out;
}

/** A BatchEncoder's rows; the last, short batch is zero-padded when the model's batch is fixed. */
async function encodeBatch(encoder: BatchEncoder, pixels: Uint8Array, n: number, source: ImageSource, batchSize: number) {
  const size = source.height * source.width * 3;
  const padded = encoder.fixedBatch !== undefined && n < batchSize;
  const input = padded ? new Uint8Array(batchSize * size) : pixels;
  if (padded) input.set(pixels);
  const { rows, cols } = await encoder.encodeBatch(input, padded ? batchSize : n, source.height, source.width);
  return { rows: padded ? rows.subarray(0, n * cols) : rows, cols };
}

/**
 * Features of every sample of `source` (row i = sample i), in inference mode, standardised over
 * the dataset (zero mean, unit variance per dimension; see `standardizeColumns`).
 */
export async function extractFeatures(encoder: FeatureEncoder, source: ImageSource, o: InferenceOptions = {}): Promise<Matrix> {
  return standardizeColumns(await encodeSamples(encoder, source, o));
}

/**
 * The encoder's raw outputs (not standardised) for the samples at `indices` (default: every
 * sample), row k = sample indices[k]. Raw, so that rows computed on different nights can be put
 * together and standardised over tonight's dataset.
 */
export async function encodeSamples(
  encoder: FeatureEncoder,
  source: ImageSource,
  o: InferenceOptions = {},
  indices?: Int32Array,
): Promise<Matrix> {
  const src = indices ? subsetSource(source, indices) : source;
  let out: Matrix | undefined;
  await inferBatches(encoder, src, o, 'extractFeatures', (start, rows, cols) => {
    out ??= matrix(src.size, cols);
    out.data.set(rows, start * cols);
  });
  // No sample to encode (a reuse where nothing changed): the width comes from the rows kept.
  return out ?? matrix(0, isBatchEncoder(encoder) ? 0 : (encoder.outputs[0].shape[1] ?? 0));
}

function subsetSource(source: ImageSource, indices: Int32Array): ImageSource {
  return {
    classes: source.classes,
    height: source.height,
    width: source.width,
    size: indices.length,
    labels: Int32Array.from(indices, (i) => source.labels[i]),
    ids: Array.from(indices, (i) => source.ids[i]),
    readImages: (idx) => source.readImages(Array.from(idx as ArrayLike<number>, (k) => indices[k])),
  };
}

/** Samples by id and content hash (an ingest artifact records a sha256 per sample). */
export interface SampleHashes {
  ids: readonly string[];
  hashes: readonly string[];
}

/**
 * For each current sample, the row of the same sample in `previous` when its id AND content
 * hash are unchanged, else -1 (new, or changed in place): only those go through the encoder.
 */
export function unchangedRows(current: SampleHashes, previous: SampleHashes): Int32Array {
  const before = new Map<string, number>();
  previous.ids.forEach((id, i) => before.set(`${id}\0${previous.hashes[i]}`, i));
  return Int32Array.from(current.ids, (id, i) => before.get(`${id}\0${current.hashes[i]}`) ?? -1);
}

/** Tonight's raw features: rows of `previous` where `from` names one, else the next row of `computed` (in order). */
export function mergeRows(from: Int32Array, previous: Matrix, computed: Matrix): Matrix {
  const cols = computed.rows ? computed.cols : previous.cols;
  if (computed.rows && previous.rows && computed.cols !== previous.cols)
    throw new Error(`mergeRows: previous features have ${previous.cols} columns, new ones ${computed.cols}`);
  const out = matrix(from.length, cols);
  let k = 0;
  from.forEach((row, i) => {
    const src = row >= 0 ? previous.data.subarray(row * cols, (row + 1) * cols) : computed.data.subarray(k * cols, ++k * cols);
    out.data.set(src, i * cols);
  });
  if (k !== computed.rows) throw new Error(`mergeRows: ${computed.rows} new rows for ${k} new samples`);
  return out;
}
