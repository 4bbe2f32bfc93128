// Label-consistent backdoor (Turner, Tsipras & Madry 2019, "Label-consistent backdoor attacks").
// Only images that truly belong to y_T are poisoned, and their labels stay right: a clean-label
// attack, invisible to anyone checking labels. To make the network rely on the trigger, the
// poisoned images are first made hard to classify by their content: an L-inf PGD perturbation
// (eps 16/255, step 1.5/255, 30 steps; attacks.md) against a classifier trained on the clean
// data, then the trigger (a 3x3 checker in each of the 4 corners, so that it survives flips and
// crops) is stamped over it. Test images get the trigger alone.
//
// Departures from the paper: the surrogate is a small ResNet-18 (width 8, 4 epochs) trained
// here with the project's classifier code, not an adversarially trained full-size model, and
// PGD starts from the clean image (no random start); the perturbations are accordingly weaker
// "hard examples". Its numbers are in `stats` (and the attack stage's log).
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { toFloatImages } from '../ml/augment.js';
import { throwIfAborted, yieldToEventLoop } from '../ml/loop.js';
import { trainClassifier } from '../ml/train.js';
import { blendPieces, type TriggerPiece } from './adaptive.js';
import { checkImage, type Attack, type AttackContext, type LcConfig } from './types.js';
import { loadTrigger } from './triggers.js';

/** PGD budget in [0, 1] pixel units. */
export interface PgdOptions {
  eps: number;
  stepSize: number;
  steps: number;
}

/**
 * L-inf PGD that raises each image's loss on its own label (untargeted, no random start):
 * x <- clip(x + step * sign(grad), x0 - eps, x0 + eps, 0, 1). `pixels` are n uint8 HWC images;
 * returns the perturbed images rounded to 8 bits, so |result - pixels| <= round(255 eps).
 */
export function pgdLinf(
  model: tfl.LayersModel,
  pixels: Uint8Array,
  n: number,
  size: number,
  labels: Int32Array,
  classes: number,
  o: PgdOptions,
): Uint8Array {
  const x0 = toFloatImages(pixels, n, size, size);
  const y = tf.oneHot(tf.tensor1d(labels, 'int32'), classes);
  const lo = tf.tidy(() => tf.clipByValue(tf.sub(x0, o.eps), 0, 1));
  const hi = tf.tidy(() => tf.clipByValue(tf.add(x0, o.eps), 0, 1));
  const grad = tf.grad((x: tf.Tensor) => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: false }) as tf.Tensor2D));
  let x: tf.Tensor = x0.clone();
  try {
    for (let s = 0; s < o.steps; s++) {
      // One tidy per step: the forward pass's activations are freed before the next.
      const next = tf.tidy(() => tf.minimum(tf.maximum(tf.add(x, tf.mul(tf.sign(grad(x)), o.stepSize)), lo), hi));
      x.dispose();
      x = next;
    }
    const out = tf.tidy(() => tf.round(tf.mul(x, 255)));
    const bytes = Uint8Array.from(out.dataSync());
    out.dispose();
    return bytes;
  } finally {
    tf.dispose([x, x0, y, lo, hi]);
  }
}

/** Argmax predictions of `model` on n uint8 images, in inference mode. */
function predictPixels(model: tfl.LayersModel, pixels: Uint8Array, n: number, size: number): Int32Array {
  return tf.tidy(() => {
    const logits = model.predict(toFloatImages(pixels, n, size, size)) as tf.Tensor2D;
    return Int32Array.from(tf.argMax(logits, 1).dataSync());
  });
}

/** Images per PGD batch (a fixed batching of the sorted poisoned ids keeps the bytes fixed per seed). */
const PGD_BATCH = 64;

export interface LcStats {
  /** Surrogate accuracy on the poisoned samples, clean and after PGD (before the trigger). */
  cleanAccuracy: number;
  adversarialAccuracy: number;
  /** Surrogate's mean training loss in its last epoch. */
  surrogateLoss: number;
}

export async function createLc(
  cfg: LcConfig,
  imageSize: number,
  ctx: AttackContext,
  modelSeed: number,
): Promise<Attack & { stats?: LcStats; stampPiece: TriggerPiece }> {
  const eps = (cfg.eps ?? 16) / 255;
  const stepSize = (cfg.stepSize ?? 1.5) / 255;
  const steps = cfg.steps ?? 30;
  const width = cfg.surrogateWidth ?? 8;
  const epochs = cfg.surrogateEpochs ?? 4;
  if (!(eps >= 0 && eps <= 1)) throw new Error(`lc: eps must be in [0, 255], got ${cfg.eps}`);
  if (!(stepSize > 0)) throw new Error(`lc: stepSize must be > 0, got ${cfg.stepSize}`);
  if (!Number.isInteger(steps) || steps < 0) throw new Error(`lc: steps must be an integer >= 0, got ${steps}`);
  const stamp: TriggerPiece = { ...(await loadTrigger(cfg.trigger ?? 'badnet_patch4_32.png', imageSize)), alpha: 1 };

  const deltas = new Map<number, Int16Array>();
  let stats: LcStats | undefined;
  const poisoned = ctx.poisoned ?? [];
  if (poisoned.length > 0) {
    const clean = ctx.clean;
    if (!clean) throw new Error('lc: the adversarial perturbation needs the clean training set (AttackContext.clean)');
    stats = await perturb(
      clean,
      poisoned,
      cfg.targetClass,
      imageSize,
      { eps, stepSize, steps },
      { width, epochs, seed: modelSeed },
      ctx,
      deltas,
    );
    ctx.log?.(
      `lc: surrogate (width ${width}, ${epochs} epochs, loss ${stats.surrogateLoss.toFixed(3)}) classifies ` +
        `${(100 * stats.cleanAccuracy).toFixed(0)}% of the ${poisoned.length} poisoned images right before PGD, ` +
        `${(100 * stats.adversarialAccuracy).toFixed(0)}% after`,
    );
  }
  return {
    name: 'lc',
    stampPiece: stamp,
    ...(stats ? { stats } : {}),
    applyTrain(img, h, w, index) {
      checkImage('lc', img, h, w, imageSize);
      const delta = deltas.get(index);
      if (!delta) {
        throw new Error(
          `lc: sample ${index} was not perturbed at creation; poisonDataset (or AttackContext.poisoned) names the samples to prepare`,
        );
      }
      const adv = new Uint8Array(img.length);
      for (let i = 0; i < img.length; i++) adv[i] = Math.min(255, Math.max(0, img[i] + delta[i]));
      return blendPieces(adv, [stamp]);
    },
    applyTest(img, h, w) {
      checkImage('lc', img, h, w, imageSize);
      return blendPieces(img, [stamp]);
    },
  };
}

/** Trains the surrogate on `clean`, runs PGD on the poisoned samples and stores adversarial - clean per sample. */
async function perturb(
  clean: ImageSource,
  poisoned: readonly number[],
  targetClass: number,
  size: number,
  pgd: PgdOptions,
  surrogate: { width: number; epochs: number; seed: number },
  ctx: AttackContext,
  deltas: Map<number, Int16Array>,
): Promise<LcStats> {
  for (const i of poisoned) {
    if (clean.labels[i] !== targetClass) throw new Error(`lc: sample ${i} has label ${clean.labels[i]}, not the target ${targetClass}`);
  }
  const { model, losses } = await trainClassifier(
    clean,
    clean.labels,
    { width: surrogate.width, epochs: surrogate.epochs, batchSize: 64, lr: 0.05, momentum: 0.9, weightDecay: 5e-4, milestones: [] },
    {
      seed: surrogate.seed,
      stem: size <= 64 ? 'cifar' : 'imagenet',
      inputSize: size,
      hooks: { ...(ctx.signal ? { signal: ctx.signal } : {}), ...(ctx.log ? { log: ctx.log } : {}) },
    },
  );
  try {
    const order = [...poisoned].sort((a, b) => a - b);
    const px = size * size * 3;
    let right = 0;
    let rightAdv = 0;
    for (let b = 0; b < order.length; b += PGD_BATCH) {
      throwIfAborted(ctx.signal, `lc: PGD batch ${b / PGD_BATCH + 1}`);
      const idx = order.slice(b, b + PGD_BATCH);
      const pixels = await clean.readImages(idx);
      const labels = new Int32Array(idx.length).fill(targetClass);
      const adv = pgdLinf(model, pixels, idx.length, size, labels, clean.classes.length, pgd);
      predictPixels(model, pixels, idx.length, size).forEach((p) => (right += p === targetClass ? 1 : 0));
      predictPixels(model, adv, idx.length, size).forEach((p) => (rightAdv += p === targetClass ? 1 : 0));
      idx.forEach((i, k) => {
        const d = new Int16Array(px);
        for (let j = 0; j < px; j++) d[j] = adv[k * px + j] - pixels[k * px + j];
        deltas.set(i, d);
      });
      await yieldToEventLoop();
    }
    return { cleanAccuracy: right / order.length, adversarialAccuracy: rightAdv / order.length, surrogateLoss: losses.at(-1) ?? NaN };
  } finally {
    model.dispose();
  }
}
