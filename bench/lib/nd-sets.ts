// The labelled sets the S_ND normalisation bench (bench/nd-normalization.ts) scores when it does
// not read saved densities: (a) synthetic class-conditional Gaussians, clean and with a feature-
// space trigger or a far cluster; (b) CIFAR-10 pixels, clean and with BadNets. C classes, the
// poison always aimed at class TARGET.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { applyStamp, cornerStamp } from '../../attacks/badnets.js';
import { loadTrigger } from '../../attacks/triggers.js';
import { ensureCifar10 } from '../../data/cifar10.js';
import { matrix, type Matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';

export const C = 10;
export const TARGET = 0;

/** How a set is poisoned: not at all, a 10% or 5% label-flip trigger, or a far cluster inside the target. */
export type SetCondition = 'clean' | 'non-disruptive' | 'non-disruptive-5%' | 'disruptive';

export interface PixelSet {
  dataset: string;
  condition: SetCondition;
  features: Matrix;
  labels: Int32Array;
  truth: Uint8Array;
}

// ---- (a) synthetic class-conditional Gaussians ----

/** One synthetic set: C classes of `perClass` Gaussians in 32 dimensions, poisoned as `condition` says. */
export function syntheticSet(
  trial: number,
  condition: SetCondition,
  perClass: number,
): { features: Matrix; labels: Int32Array; truth: Uint8Array } {
  const d = 32;
  const rng = new Rng(1000 + trial);
  // Class means N(0, 0.5^2) per dim (overlapping classes, as in self-supervised feature spaces); per-class, per-dim spreads log-uniform in [0.6, 1.6], so the
  // classes differ in how broad they are (the source of S_ND's clean-class spread).
  const means = Array.from({ length: C }, () => Float32Array.from({ length: d }, () => 0.5 * rng.normal()));
  const spreads = Array.from({ length: C }, () =>
    Float32Array.from({ length: d }, () => Math.exp(rng.uniform(Math.log(0.6), Math.log(1.6)))),
  );
  const sample = (c: number, out: Float32Array, o: number) => {
    for (let j = 0; j < d; j++) out[o + j] = means[c][j] + spreads[c][j] * rng.normal();
  };
  const n = C * perClass;
  const poisoned = condition === 'non-disruptive' ? Math.round(0.1 * n) : condition === 'non-disruptive-5%' ? Math.round(0.05 * n) : 0;
  const data = new Float32Array((n + poisoned) * d);
  const labels = new Int32Array(n + poisoned);
  const truth = new Uint8Array(n + poisoned);
  for (let i = 0; i < n; i++) {
    labels[i] = i % C;
    sample(labels[i], data, i * d);
  }
  if (poisoned > 0) {
    // A "trigger" in feature space: a small shift (0.5 sd) along 4 fixed dims; the sample stays
    // in its source class's distribution, and is labelled as the target.
    for (let p = 0; p < poisoned; p++) {
      const i = n + p;
      sample(1 + (p % (C - 1)), data, i * d);
      for (let j = 0; j < 4; j++) data[i * d + j] += 0.5;
      labels[i] = TARGET;
      truth[i] = 1;
    }
  } else if (condition === 'disruptive') {
    // Clean-label style: 30% of the target's own samples moved to a tight cluster far from all.
    const far = Float32Array.from({ length: d }, () => 6 + rng.normal());
    let moved = 0;
    for (let i = 0; i < n && moved < 0.3 * perClass; i++) {
      if (labels[i] !== TARGET) continue;
      for (let j = 0; j < d; j++) data[i * d + j] = far[j] + 0.3 * rng.normal();
      truth[i] = 1;
      moved++;
    }
  }
  return { features: matrix(n + poisoned, d, data), labels, truth };
}

// ---- (b) CIFAR-10 pixels ----

async function decode(file: string): Promise<Uint8Array> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== 32 || info.height !== 32 || info.channels !== 3)
    throw new Error(`${file}: expected 32x32 RGB, got ${info.width}x${info.height}x${info.channels}`);
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Average-pools a 32x32 RGB image to side x side, values in [0, 1]. */
function pool(img: Uint8Array, side: number, out: Float32Array, o: number): void {
  const f = 32 / side;
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) s += img[((y * f + dy) * 32 + x * f + dx) * 3 + c];
        out[o + (y * side + x) * 3 + c] = s / (f * f * 255);
      }
}

async function cifarImages(trial: number, perClass: number): Promise<{ images: Uint8Array[]; labels: Int32Array }> {
  const { train, classes } = await ensureCifar10();
  const rng = new Rng(2000 + trial);
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  for (let c = 0; c < C; c++) {
    const files = (await readdir(join(train, classes[c]))).sort();
    const pick = rng.permutation(files.length).slice(0, perClass);
    for (const k of pick) {
      images.push(await decode(join(train, classes[c], files[k])));
      labels.push(c);
    }
  }
  return { images, labels: Int32Array.from(labels) };
}

/**
 * The CIFAR-10 pixel sets of one trial: `perClass` images per class, clean and with BadNets on
 * 10% (target TARGET), average-pooled to 8x8 and 16x16.
 */
export async function* cifarPixelSets(trial: number, perClass: number): AsyncGenerator<PixelSet> {
  const { images, labels } = await cifarImages(trial, perClass);
  const stamp = cornerStamp(await loadTrigger('badnet_patch_32.png', 32), 32, 'upper-left');
  const rng = new Rng(3000 + trial);
  // BadNets: 10% of the set, drawn from the non-target classes, stamped and relabelled to 0.
  const candidates = Array.from(labels.keys()).filter((i) => labels[i] !== TARGET);
  const order = rng.permutation(candidates.length);
  const poisonedIdx = new Set(Array.from(order.slice(0, Math.round(0.1 * labels.length)), (k) => candidates[k]));
  const poisonedLabels = labels.slice();
  const poisonedImages = images.map((img, i) => (poisonedIdx.has(i) ? applyStamp(img, 32, stamp) : img));
  for (const i of poisonedIdx) poisonedLabels[i] = TARGET;
  for (const side of [8, 16]) {
    const d = side * side * 3;
    const truth = Uint8Array.from(labels, (_, i) => (poisonedIdx.has(i) ? 1 : 0));
    for (const [condition, imgs, lab, tr] of [
      ['clean', images, labels, new Uint8Array(labels.length)],
      ['non-disruptive', poisonedImages, poisonedLabels, truth],
    ] as const) {
      const features = matrix(imgs.length, d);
      imgs.forEach((img, i) => pool(img, side, features.data, i * d));
      yield { dataset: `cifar-pixels-${side}x${side}`, condition, features, labels: lab, truth: tr };
    }
  }
}
