// Paper step 2: the self-supervised encoder f, SimCLR (Chen et al. 2020) trained on the
// poisoned dataset itself, labels unused. ResNet-18 backbone + MLP projection head, NT-Xent
// loss on two augmented views of each image, Adam with betas (0.9, 0.99).
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { simclrAugment, toFloatImages } from './augment.js';
import type { SimclrEncoderConfig } from './config.js';
import { gradientStep, runEpochs, trainableVariables, type TrainHooks } from './loop.js';
import { Adam } from './optim.js';
import { Rng } from './random.js';
import { buildResNet18, featureDim } from './resnet.js';

export type { TrainHooks, TrainProgress } from './loop.js';
export { AbortError } from './loop.js';

/** Paper: Adam betas (0.9, 0.99). */
export const SIMCLR_BETAS = [0.9, 0.99] as const;

/**
 * NT-Xent (normalised temperature-scaled cross entropy). Rows z1[i] and z2[i] are the two
 * views of sample i. Every one of the 2N embeddings is an anchor whose positive is its other
 * view and whose negatives are the remaining 2N - 2; embeddings are L2-normalised, similarity
 * is the cosine divided by `temperature`, and the loss is the mean over all 2N anchors of
 * -log softmax(similarities)[positive].
 */
export function ntXentLoss(z1: tf.Tensor2D, z2: tf.Tensor2D, temperature: number): tf.Scalar {
  if (z1.shape[0] !== z2.shape[0] || z1.shape[1] !== z2.shape[1]) {
    throw new Error(`ntXentLoss: views have shapes [${z1.shape}] and [${z2.shape}]`);
  }
  if (!(temperature > 0)) throw new Error(`ntXentLoss: temperature must be > 0, got ${temperature}`);
  const n = z1.shape[0];
  return tf.tidy(() => {
    const z = tf.concat([z1, z2], 0);
    const unit = tf.mul(z, tf.rsqrt(tf.maximum(tf.sum(tf.square(z), 1, true), 1e-12)));
    const sim = tf.div(tf.matMul(unit, unit, false, true), temperature);
    // An anchor is never its own negative: push self-similarity to -1e9 (exp underflows to 0).
    const logits = tf.sub(sim, tf.mul(tf.eye(2 * n), 1e9));
    const logProb = tf.logSoftmax(logits);
    const positive = Int32Array.from({ length: 2 * n }, (_, i) => (i + n) % (2 * n));
    const mask = tf.oneHot(tf.tensor1d(positive, 'int32'), 2 * n);
    return tf.neg(tf.mean(tf.sum(tf.mul(logProb, mask), 1))) as tf.Scalar;
  });
}

/** SimCLR's projection head g: dense(d) -> ReLU -> dense(projectionDim). Discarded after training. */
export function buildProjectionHead(inDim: number, projectionDim: number, seed: number): tfl.Sequential {
  const rng = new Rng(seed);
  const init = () => tfl.initializers.glorotUniform({ seed: rng.int(2 ** 31) });
  return tfl.sequential({
    name: 'projection_head',
    layers: [
      tfl.layers.dense({ inputShape: [inDim], units: inDim, activation: 'relu', kernelInitializer: init(), name: 'proj_hidden' }),
      tfl.layers.dense({ units: projectionDim, kernelInitializer: init(), name: 'proj_out' }),
    ],
  });
}

// Salts separating the random streams of one seed (weights vs data order / augmentation).
const HEAD_SEED_SALT = 0x51c1;
const DATA_STREAM_SALT = 2;

/**
 * Trains the SimCLR encoder on `source` (labels ignored). Returns the backbone (images in
 * [0, 1] -> features of size 8 * width), the mean loss of every epoch, and the epoch it resumed
 * from when `hooks.checkpointDir` held a checkpoint of the same run.
 */
export async function trainSimclr(
  source: ImageSource,
  cfg: SimclrEncoderConfig,
  seed: number,
  hooks?: TrainHooks,
): Promise<{ encoder: tfl.LayersModel; losses: number[]; resumedFromEpoch: number }> {
  if (source.height !== source.width) {
    throw new Error(`trainSimclr: images must be square, got ${source.height}x${source.width}`);
  }
  const encoder = buildResNet18({ stem: cfg.stem, width: cfg.width, inputSize: source.height, seed });
  const head = buildProjectionHead(featureDim(cfg.width), cfg.projectionDim, seed ^ HEAD_SEED_SALT);
  const vars = trainableVariables([...encoder.trainableWeights, ...head.trainableWeights]);
  const optimizer = new Adam(vars, cfg.lr, SIMCLR_BETAS[0], SIMCLR_BETAS[1]);
  const encoderWeights = encoder.getWeights().length;
  // Epochs are left out so that a finished run can be extended by raising them.
  const { epochs: _epochs, ...shape } = cfg;
  const fingerprint = JSON.stringify({ run: 'simclr', v: 1, cfg: shape, seed, n: source.size, size: source.height });
  const { height: h, width: w } = source;
  try {
    const { losses, resumedFromEpoch } = await runEpochs({
      name: 'simclr',
      epochs: cfg.epochs,
      pool: Int32Array.from({ length: source.size }, (_, i) => i),
      batchSize: cfg.batchSize,
      minBatch: 2,
      rng: new Rng(seed).fork(DATA_STREAM_SALT),
      fingerprint,
      getWeights: () => [...encoder.getWeights(), ...head.getWeights()],
      setWeights: (ws) => {
        encoder.setWeights(ws.slice(0, encoderWeights));
        head.setWeights(ws.slice(encoderWeights));
      },
      optimizer,
      hooks,
      step: async (idx, rng) => {
        const pixels = await source.readImages(idx);
        const [v1, v2] = tf.tidy(() => {
          const x = toFloatImages(pixels, idx.length, h, w);
          return [simclrAugment(x, rng), simclrAugment(x, rng)];
        });
        try {
          return await gradientStep(
            () => {
              // Both views in one pass, so BatchNorm sees the statistics of the whole 2N batch.
              const features = encoder.apply(tf.concat([v1, v2], 0), { training: true }) as tf.Tensor2D;
              const z = head.apply(features, { training: true }) as tf.Tensor2D;
              const [z1, z2] = tf.split(z, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
              return ntXentLoss(z1, z2, cfg.temperature);
            },
            vars,
            optimizer,
          );
        } finally {
          tf.dispose([v1, v2]);
        }
      },
    });
    return { encoder, losses, resumedFromEpoch };
  } catch (err) {
    encoder.dispose();
    throw err;
  } finally {
    head.dispose();
    optimizer.dispose();
  }
}
