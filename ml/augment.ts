// Image augmentations: SimCLR's two random views (paper step 2) and the classifier's crop +
// flip (step 9). Parameters are drawn per image from an `Rng` in JS, then applied to the whole
// batch with a few tensor ops, so the same rng state gives the same views on every backend.
import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from './random.js';

/** uint8 NHWC pixels -> float32 [n, h, w, 3] in [0, 1]. */
export function toFloatImages(pixels: Uint8Array, n: number, h: number, w: number): tf.Tensor4D {
  const expected = n * h * w * 3;
  if (pixels.length !== expected) {
    throw new Error(`toFloatImages: ${pixels.length} bytes for ${n} images of ${h}x${w}x3 (expected ${expected})`);
  }
  const f = new Float32Array(expected);
  for (let i = 0; i < expected; i++) f[i] = pixels[i] / 255;
  return tf.tensor4d(f, [n, h, w, 3]);
}

/** Crop rectangle in pixels (inclusive top/left, size in pixels). */
export interface Crop {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Colour-jitter factors of one image (torchvision ColorJitter semantics). */
export interface Jitter {
  /** Multiplies intensities. */
  brightness: number;
  /** Scales the distance to the image's mean grey level. */
  contrast: number;
  /** Scales the distance to the pixel's grey value. */
  saturation: number;
  /** Hue shift as a fraction of a full turn, in [-0.5, 0.5]. */
  hue: number;
}

/** Everything random about one batch's augmentation, one entry per image. */
export interface AugmentParams {
  crops: Crop[];
  flips: boolean[];
  /** undefined: no colour jitter for that image. */
  jitters: (Jitter | undefined)[];
  grays: boolean[];
}

// torchvision RandomResizedCrop defaults; "random resized crop" in the paper means these.
const CROP_SCALE: readonly [number, number] = [0.08, 1];
const CROP_RATIO: readonly [number, number] = [3 / 4, 4 / 3];
// SimCLR's CIFAR colour distortion: strength 0.5 of (0.8, 0.8, 0.8, 0.2), applied with p 0.8;
// random grayscale p 0.2 (Chen et al. 2020, appendix A).
const SIMCLR_JITTER = { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 } as const;
const SIMCLR_GRAY_P = 0.2;
const FLIP_P = 0.5;

// ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
const LUMA = [0.299, 0.587, 0.114] as const;

/** torchvision's RandomResizedCrop.get_params: 10 tries at a random area/aspect, then a centred fallback. */
export function sampleCrop(rng: Rng, h: number, w: number, scale = CROP_SCALE, ratio = CROP_RATIO): Crop {
  const area = h * w;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const cw = Math.round(Math.sqrt(target * aspect));
    const ch = Math.round(Math.sqrt(target / aspect));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      return { top: rng.int(h - ch + 1), left: rng.int(w - cw + 1), height: ch, width: cw };
    }
  }
  const inRatio = w / h;
  let cw = w;
  let ch = h;
  if (inRatio < ratio[0]) ch = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) cw = Math.round(h * ratio[1]);
  return { top: Math.floor((h - ch) / 2), left: Math.floor((w - cw) / 2), height: ch, width: cw };
}

/** Random parameters of SimCLR's view augmentation for n images of h x w. */
export function sampleSimclrParams(rng: Rng, n: number, h: number, w: number): AugmentParams {
  const p: AugmentParams = { crops: [], flips: [], jitters: [], grays: [] };
  const J = SIMCLR_JITTER;
  for (let i = 0; i < n; i++) {
    p.crops.push(sampleCrop(rng, h, w));
    p.flips.push(rng.next() < FLIP_P);
    // Draw all four factors whether or not jitter applies, so each image consumes the same
    // amount of the stream (easier to reason about reproducibility).
    const apply = rng.next() < J.p;
    const jitter: Jitter = {
      brightness: rng.uniform(1 - J.brightness, 1 + J.brightness),
      contrast: rng.uniform(1 - J.contrast, 1 + J.contrast),
      saturation: rng.uniform(1 - J.saturation, 1 + J.saturation),
      hue: rng.uniform(-J.hue, J.hue),
    };
    p.jitters.push(apply ? jitter : undefined);
    p.grays.push(rng.next() < SIMCLR_GRAY_P);
  }
  return p;
}

/** Random parameters of the classifier's augmentation: random resized crop + horizontal flip. */
function sampleTrainParams(rng: Rng, n: number, h: number, w: number): AugmentParams {
  const p: AugmentParams = { crops: [], flips: [], jitters: [], grays: [] };
  for (let i = 0; i < n; i++) {
    p.crops.push(sampleCrop(rng, h, w));
    p.flips.push(rng.next() < FLIP_P);
    p.jitters.push(undefined);
    p.grays.push(false);
  }
  return p;
}

/**
 * Normalised [lo, hi] box coordinates of pixels [start, start + size - 1] along an axis of
 * `len` pixels, reversed when flipped. cropAndResize samples at lo*(len-1) + k*step and writes
 * zeros for positions past the last pixel; a box ending exactly at 1 can land there by one
 * rounding error, so partial boxes are kept a hair (1e-6) inside the image. The full axis
 * stays exactly [0, 1], which samples every pixel exactly.
 */
function axisBox(start: number, size: number, len: number, flip: boolean): [number, number] {
  let lo = len > 1 ? start / (len - 1) : 0;
  let hi = len > 1 ? (start + size - 1) / (len - 1) : 0;
  if (!(lo === 0 && hi === 1)) {
    const eps = 1e-6;
    lo = Math.min(Math.max(lo, eps), 1 - eps);
    hi = Math.min(Math.max(hi, eps), 1 - eps);
  }
  return flip ? [hi, lo] : [lo, hi];
}

/** 3x3 matrix (row-major) rotating hue by `turn` of a full circle, in YIQ space. */
function hueMatrix(turn: number): number[] {
  // YIQ keeps luma in Y and puts chroma in the (I, Q) plane; a hue shift is a rotation of that
  // plane. (torchvision shifts H in HSV; the rotation is the usual linear approximation and lets
  // the whole batch be one batched matmul.)
  const T = [0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312];
  const Ti = invert3(T);
  const c = Math.cos(2 * Math.PI * turn);
  const s = Math.sin(2 * Math.PI * turn);
  const R = [1, 0, 0, 0, c, -s, 0, s, c];
  return mul3(Ti, mul3(R, T));
}

function mul3(a: number[], b: number[]): number[] {
  const r = new Array<number>(9).fill(0);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) r[i * 3 + j] += a[i * 3 + k] * b[k * 3 + j];
  return r;
}

function invert3(m: number[]): number[] {
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [A, -(b * i - c * h), b * f - c * e, B, a * i - c * g, -(a * f - c * d), C, -(a * h - b * g), a * e - b * d].map((x) => x / det);
}

const clip01 = (x: tf.Tensor4D) => tf.clipByValue(x, 0, 1);

/** Grey value per pixel: [n, h, w, 1]. */
function luma(x: tf.Tensor4D): tf.Tensor4D {
  return tf.sum(tf.mul(x, tf.tensor1d([...LUMA])), -1, true);
}

/**
 * Applies the given parameters: crop + resize back to h x w (bilinear) with the flip folded
 * into the crop box, then brightness, contrast, saturation, hue (a fixed order; torchvision
 * shuffles it), clipping to [0, 1] after each, then grayscale.
 */
export function applyAugmentation(images: tf.Tensor4D, p: AugmentParams): tf.Tensor4D {
  const [n, h, w] = images.shape;
  if (p.crops.length !== n || p.flips.length !== n || p.jitters.length !== n || p.grays.length !== n) {
    throw new Error(`applyAugmentation: parameters for ${p.crops.length} images, batch has ${n}`);
  }
  return tf.tidy(() => {
    const boxes = new Float32Array(n * 4);
    for (let i = 0; i < n; i++) {
      const c = p.crops[i];
      const [y1, y2] = axisBox(c.top, c.height, h, false);
      const [x1, x2] = axisBox(c.left, c.width, w, p.flips[i]);
      boxes.set([y1, x1, y2, x2], i * 4);
    }
    const boxInd = tf.tensor1d(
      Int32Array.from({ length: n }, (_, i) => i),
      'int32',
    );
    let x = tf.image.cropAndResize(images, tf.tensor2d(boxes, [n, 4]), boxInd, [h, w], 'bilinear') as tf.Tensor4D;

    if (p.jitters.some((j) => j !== undefined)) {
      const col = (f: (j: Jitter) => number, identity: number) =>
        tf.tensor4d(
          p.jitters.map((j) => (j ? f(j) : identity)),
          [n, 1, 1, 1],
        );
      const on = tf.tensor4d(
        p.jitters.map((j) => (j ? 1 : 0)),
        [n, 1, 1, 1],
      );
      let y = clip01(
        tf.mul(
          x,
          col((j) => j.brightness, 1),
        ),
      );
      const mean = tf.mean(luma(y), [1, 2, 3], true);
      // Contrast and saturation both scale the distance from a reference image (its mean luma, its grey).
      const scaleAround = (v: tf.Tensor4D, ref: tf.Tensor, factor: tf.Tensor) => clip01(tf.add(tf.mul(tf.sub(v, ref), factor), ref));
      y = scaleAround(
        y,
        mean,
        col((j) => j.contrast, 1),
      );
      y = scaleAround(
        y,
        luma(y),
        col((j) => j.saturation, 1),
      );
      const hue = tf.tensor3d(
        p.jitters.flatMap((j) => hueMatrix(j ? j.hue : 0)),
        [n, 3, 3],
      );
      // Per pixel rgb' = M rgb, i.e. rows [hw, 3] times M^T.
      y = clip01(tf.reshape(tf.matMul(tf.reshape(y, [n, h * w, 3]), hue, false, true), [n, h, w, 3]));
      // Images without jitter keep their cropped pixels bit for bit (x + 0 * (y - x) == x).
      x = tf.add(x, tf.mul(on, tf.sub(y, x)));
    }
    if (p.grays.some((g) => g)) {
      const on = tf.tensor4d(
        p.grays.map((g) => (g ? 1 : 0)),
        [n, 1, 1, 1],
      );
      const grey = tf.tile(luma(x), [1, 1, 1, 3]);
      x = tf.add(x, tf.mul(on, tf.sub(grey, x)));
    }
    return x;
  });
}

/** SimCLR view: random resized crop, flip p .5, colour jitter p .8, grayscale p .2. Same shape, [0, 1]. */
export function simclrAugment(images: tf.Tensor4D, rng: Rng): tf.Tensor4D {
  const [n, h, w] = images.shape;
  return applyAugmentation(images, sampleSimclrParams(rng, n, h, w));
}

/** Classifier training augmentation: random resized crop + horizontal flip. */
export function trainAugment(images: tf.Tensor4D, rng: Rng): tf.Tensor4D {
  const [n, h, w] = images.shape;
  return applyAugmentation(images, sampleTrainParams(rng, n, h, w));
}
