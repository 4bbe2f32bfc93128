// ISSBA (Li et al. 2021, "Invisible backdoor attack with sample-specific triggers"). A
// StegaStamp-style encoder (Tancik et al. 2020) hides a secret bit string in an image as a small
// residual; a decoder is trained jointly to read the bits back, so the residual carries a
// signal a network can learn while depending on the image (a different trigger per sample).
// The attack encodes one fixed secret into every poisoned and every test image.
//
// Departures from the original, for the scale of these machines:
// - a small U-Net (one downsampling level, `width` channels, 16 by default) instead of
//   StegaStamp's five-level one; the decoder is three strided convolutions and two dense layers
//   (no spatial transformer);
// - trained for a few hundred steps (`trainSteps`, 400 x 32 images) on the clean training set,
//   not 20 epochs;
// - losses: bit cross-entropy plus an L2 penalty on the residual; no LPIPS perceptual loss, no
//   critic, and of StegaStamp's noise layers only the 8-bit rounding (uniform +-0.5/255 noise);
// - the residual is bounded by construction, eps * tanh(.), L-inf eps = 8/255 by default (the
//   original bounds it only through its losses).
// Training runs in the process's tfjs backend, seeded (initialisers, batches, secrets, noise):
// the same seed gives the same bytes on the same backend.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { toFloatImages } from '../ml/augment.js';
import { gradientStep, throwIfAborted, trainableVariables, yieldToEventLoop } from '../ml/loop.js';
import { loadModel, saveModel } from '../ml/model-io.js';
import { Adam } from '../ml/optim.js';
import { Rng } from '../ml/random.js';
import { checkImage, type Attack, type AttackContext, type IssbaConfig } from './types.js';

/** Images per training step. */
const BATCH = 32;
/** Adam learning rate of encoder and decoder. */
const LR = 1e-3;
/**
 * Final weight of the residual's mean square (in units of eps^2) against the bit cross-entropy.
 * It is 0 for the first half of training and ramps up linearly over the second (StegaStamp
 * ramps its image losses too): from the start it drives the residual to 0 before the decoder
 * has found any signal in it.
 */
const IMAGE_LOSS_WEIGHT = 0.05;

interface IssbaShape {
  size: number;
  bits: number;
  width: number;
  /** Residual bound in [0, 1] pixel units. */
  eps: number;
}

/**
 * Encoder: (image [S, S, 3] in [0, 1], secret [bits] in {0, 1}) -> residual [S, S, 3] within
 * +-eps. The secret goes through a dense layer to an (S/4)^2 map, upsampled to the image (as
 * StegaStamp does), and is concatenated with the image; then a one-level U-Net.
 */
export function buildIssbaEncoder(o: IssbaShape, seed: number): tfl.LayersModel {
  if (o.size % 4 !== 0) throw new Error(`issba: image size must be a multiple of 4, got ${o.size}`);
  const rng = new Rng(seed);
  const init = () => tfl.initializers.glorotUniform({ seed: rng.int(2 ** 31) });
  // Leaky ReLUs: with plain ReLUs a narrow encoder often loses its units before the decoder has
  // found the secret, and the residual collapses to 0.
  const leaky = (x: SymbolicTensor, name: string) => tfl.layers.leakyReLU({ alpha: 0.2, name: `${name}_act` }).apply(x) as SymbolicTensor;
  const conv = (
    x: SymbolicTensor,
    filters: number,
    kernel: number,
    strides: number,
    name: string,
    activation: 'leaky' | 'linear' = 'leaky',
  ) => {
    const y = tfl.layers
      .conv2d({ filters, kernelSize: kernel, strides, padding: 'same', kernelInitializer: init(), name })
      .apply(x) as SymbolicTensor;
    return activation === 'leaky' ? leaky(y, name) : y;
  };
  const image = tfl.input({ shape: [o.size, o.size, 3], name: 'image' });
  const secret = tfl.input({ shape: [o.bits], name: 'secret' });
  const q = o.size / 4;
  let s = leaky(
    tfl.layers.dense({ units: q * q * 3, kernelInitializer: init(), name: 'secret_dense' }).apply(secret) as SymbolicTensor,
    'secret_dense',
  );
  s = tfl.layers.reshape({ targetShape: [q, q, 3], name: 'secret_map' }).apply(s) as SymbolicTensor;
  s = tfl.layers.upSampling2d({ size: [4, 4], name: 'secret_up' }).apply(s) as SymbolicTensor;
  const x = tfl.layers.rescaling({ scale: 2, offset: -1, name: 'normalize' }).apply(image) as SymbolicTensor;
  const inp = tfl.layers.concatenate({ name: 'with_secret' }).apply([x, s]) as SymbolicTensor;
  const e1 = conv(conv(inp, o.width, 3, 1, 'enc1a'), o.width, 3, 1, 'enc1b');
  const e2 = conv(conv(e1, 2 * o.width, 3, 2, 'enc2a'), 2 * o.width, 3, 1, 'enc2b');
  const up = tfl.layers.upSampling2d({ size: [2, 2], name: 'up' }).apply(e2) as SymbolicTensor;
  const d1 = conv(tfl.layers.concatenate({ name: 'skip' }).apply([up, e1, inp]) as SymbolicTensor, o.width, 3, 1, 'dec1');
  const r = conv(d1, 3, 1, 1, 'residual_raw', 'linear');
  const bounded = tfl.layers.activation({ activation: 'tanh', name: 'residual_tanh' }).apply(r) as SymbolicTensor;
  const residual = tfl.layers.rescaling({ scale: o.eps, offset: 0, name: 'residual' }).apply(bounded) as SymbolicTensor;
  return tfl.model({ inputs: [image, secret], outputs: residual, name: 'issba_encoder' });
}

/** Decoder: image [S, S, 3] in [0, 1] -> one logit per bit. */
export function buildIssbaDecoder(o: IssbaShape, seed: number): tfl.LayersModel {
  const rng = new Rng(seed);
  const init = () => tfl.initializers.glorotUniform({ seed: rng.int(2 ** 31) });
  const image = tfl.input({ shape: [o.size, o.size, 3], name: 'image' });
  let x = tfl.layers.rescaling({ scale: 2, offset: -1, name: 'normalize' }).apply(image) as SymbolicTensor;
  for (const [k, f] of [o.width, 2 * o.width, 2 * o.width].entries()) {
    x = tfl.layers
      .conv2d({ filters: f, kernelSize: 3, strides: 2, padding: 'same', kernelInitializer: init(), name: `conv${k + 1}` })
      .apply(x) as SymbolicTensor;
    x = tfl.layers.leakyReLU({ alpha: 0.2, name: `conv${k + 1}_act` }).apply(x) as SymbolicTensor;
  }
  x = tfl.layers.flatten({ name: 'flatten' }).apply(x) as SymbolicTensor;
  x = tfl.layers.dense({ units: 128, kernelInitializer: init(), name: 'hidden' }).apply(x) as SymbolicTensor;
  x = tfl.layers.leakyReLU({ alpha: 0.2, name: 'hidden_act' }).apply(x) as SymbolicTensor;
  const logits = tfl.layers.dense({ units: o.bits, kernelInitializer: init(), name: 'bits' }).apply(x) as SymbolicTensor;
  return tfl.model({ inputs: image, outputs: logits, name: 'issba_decoder' });
}

/** x + encoder(x, secret), clipped to [0, 1] (float, before rounding). */
function encodeTensor(encoder: tfl.LayersModel, x: tf.Tensor4D, secrets: tf.Tensor2D): tf.Tensor4D {
  return tf.clipByValue(tf.add(x, encoder.apply([x, secrets], { training: false }) as tf.Tensor4D), 0, 1);
}

/**
 * Trains encoder and decoder on random secrets (as StegaStamp does: a decoder trained on one
 * fixed secret could ignore the image). Returns the last 20 steps' mean bit accuracy.
 */
async function trainStegaStamp(
  clean: ImageSource,
  encoder: tfl.LayersModel,
  decoder: tfl.LayersModel,
  o: IssbaShape,
  steps: number,
  rng: Rng,
  ctx: AttackContext,
): Promise<number> {
  const vars = [...trainableVariables(encoder.trainableWeights), ...trainableVariables(decoder.trainableWeights)];
  const optimizer = new Adam(vars, LR, 0.9, 0.999);
  const px = o.size * o.size * 3;
  const recent: number[] = [];
  try {
    for (let step = 0; step < steps; step++) {
      throwIfAborted(ctx.signal, `issba: encoder step ${step + 1}/${steps}`);
      const idx = Int32Array.from({ length: BATCH }, () => rng.int(clean.size));
      const pixels = await clean.readImages(idx);
      const secretBits = Float32Array.from({ length: BATCH * o.bits }, () => rng.int(2));
      // Uniform +-0.5/255: what rounding the poisoned image to 8 bits does to it.
      const noiseValues = Float32Array.from({ length: BATCH * px }, () => (rng.next() - 0.5) / 255);
      const x = toFloatImages(pixels, BATCH, o.size, o.size);
      const secrets = tf.tensor2d(secretBits, [BATCH, o.bits]);
      const noise = tf.tensor4d(noiseValues, [BATCH, o.size, o.size, 3]);
      let acc = 0;
      const imageWeight = IMAGE_LOSS_WEIGHT * Math.max(0, (2 * step) / steps - 1);
      try {
        await gradientStep(
          () => {
            const residual = encoder.apply([x, secrets], { training: true }) as tf.Tensor4D;
            const stamped = tf.add(tf.clipByValue(tf.add(x, residual), 0, 1), noise);
            const logits = decoder.apply(stamped, { training: true }) as tf.Tensor2D;
            acc = tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.greater(logits, 0), tf.greater(secrets, 0.5)), 'float32')).dataSync()[0]);
            const bitLoss = tf.losses.sigmoidCrossEntropy(secrets, logits);
            const imageLoss = tf.div(tf.mean(tf.square(residual)), o.eps * o.eps);
            return tf.add(bitLoss, tf.mul(imageLoss, imageWeight)) as tf.Scalar;
          },
          vars,
          optimizer,
        );
      } finally {
        tf.dispose([x, secrets, noise]);
      }
      recent.push(acc);
      if (recent.length > 20) recent.shift();
      if ((step + 1) % 100 === 0)
        ctx.log?.(`issba: encoder step ${step + 1}/${steps}, bit accuracy ${recent.reduce((a, b) => a + b, 0) / recent.length}`);
      await yieldToEventLoop();
    }
  } finally {
    optimizer.dispose();
  }
  return recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
}

/** What `save` writes beside the encoder: the secret and the shape it was trained for. */
interface IssbaFile {
  size: number;
  bits: number;
  eps: number;
  secret: number[];
}
const ISSBA_FILE = 'issba.json';

export interface IssbaAttack extends Attack {
  /** The fixed secret encoded into every poisoned and test image. */
  secret: Uint8Array;
  /** Mean bit accuracy of the last training steps (undefined when loaded from a folder). */
  trainBitAccuracy?: number;
  /** Decoder's bit probabilities for n uint8 images (undefined when loaded from a folder: the decoder is not saved). */
  decode?(pixels: Uint8Array, n: number): Float32Array;
}

export async function createIssba(cfg: IssbaConfig, imageSize: number, ctx: AttackContext, triggerRng: Rng): Promise<IssbaAttack> {
  const shape: IssbaShape = { size: imageSize, bits: cfg.bits ?? 20, width: cfg.width ?? 16, eps: (cfg.eps ?? 8) / 255 };
  const steps = cfg.trainSteps ?? 400;
  if (!Number.isInteger(shape.bits) || shape.bits < 1) throw new Error(`issba: bits must be a positive integer, got ${shape.bits}`);
  if (!(shape.eps > 0 && shape.eps <= 1)) throw new Error(`issba: eps must be in (0, 255], got ${cfg.eps}`);
  if (!Number.isInteger(shape.width) || shape.width < 1) throw new Error(`issba: width must be a positive integer, got ${shape.width}`);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`issba: trainSteps must be a positive integer, got ${steps}`);
  // Drawn first, so the secret does not depend on how the encoder is obtained.
  const secret = Uint8Array.from({ length: shape.bits }, () => triggerRng.int(2));
  const modelSeed = triggerRng.int(2 ** 31);

  let encoder: tfl.LayersModel;
  let decoder: tfl.LayersModel | undefined;
  let trainBitAccuracy: number | undefined;
  if (ctx.modelDir) {
    const saved = JSON.parse(await readFile(join(ctx.modelDir, ISSBA_FILE), 'utf8')) as IssbaFile;
    if (saved.size !== shape.size || saved.bits !== shape.bits || saved.eps !== shape.eps || saved.secret.join('') !== secret.join('')) {
      throw new Error(`issba: the encoder in ${ctx.modelDir} was made for another configuration or seed`);
    }
    encoder = await loadModel(join(ctx.modelDir, 'encoder'));
  } else if (ctx.clean) {
    encoder = buildIssbaEncoder(shape, modelSeed);
    decoder = buildIssbaDecoder(shape, modelSeed + 1);
    trainBitAccuracy = await trainStegaStamp(ctx.clean, encoder, decoder, shape, steps, new Rng(modelSeed).fork(1), ctx);
    ctx.log?.(`issba: encoder trained for ${steps} steps, bit accuracy ${trainBitAccuracy.toFixed(3)} on its last batches`);
  } else {
    throw new Error(
      'issba: the encoder is trained on the clean training set: pass it (AttackContext.clean) or the folder an earlier attack saved (AttackContext.modelDir)',
    );
  }
  const secretT = tf.tensor2d(Float32Array.from(secret), [1, shape.bits]);
  // One image at a time, always: the bytes must not depend on what else is read with it.
  const encode = (img: Uint8Array, h: number, w: number): Uint8Array => {
    checkImage('issba', img, h, w, imageSize);
    return tf.tidy(() => {
      const y = encodeTensor(encoder, toFloatImages(img, 1, h, w), secretT);
      return Uint8Array.from(tf.round(tf.mul(y, 255)).dataSync());
    });
  };
  const dec = decoder;
  return {
    name: 'issba',
    secret,
    ...(trainBitAccuracy !== undefined ? { trainBitAccuracy } : {}),
    ...(dec
      ? {
          decode: (pixels: Uint8Array, n: number) =>
            tf.tidy(() =>
              Float32Array.from(tf.sigmoid(dec.predict(toFloatImages(pixels, n, imageSize, imageSize)) as tf.Tensor).dataSync()),
            ),
        }
      : {}),
    applyTrain: (img, h, w) => encode(img, h, w),
    applyTest: (img, h, w) => encode(img, h, w),
    async save(dir) {
      await mkdir(dir, { recursive: true });
      await saveModel(encoder, join(dir, 'encoder'));
      const file: IssbaFile = { size: shape.size, bits: shape.bits, eps: shape.eps, secret: Array.from(secret) };
      await writeFile(join(dir, ISSBA_FILE), JSON.stringify(file) + '\n');
    },
    dispose() {
      encoder.dispose();
      dec?.dispose();
      secretT.dispose();
    },
  };
}
