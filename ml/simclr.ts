// Paper step 2: the self-supervised encoder f, SimCLR (Chen et al. 2020) trained on the
// poisoned dataset itself, labels unused. ResNet-18 backbone + MLP projection head, NT-Xent
// loss on two augmented views of each image, Adam with betas (0.9, 0.99).
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { simclrAugment, toFloatImages } from './augment.js';
import type { SimclrEncoderConfig } from './config.js';
import { loadCheckpoint } from './checkpoint.js';
import { gradientStep, runEpochs, trainableVariables, type TrainHooks } from './loop.js';
import { loadModel } from './model-io.js';
import { Adam, type OptimizerState } from './optim.js';
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
 * Where a warm-started run begins. With `state` (the parent run's final checkpoint) the run
 * continues the parent exactly: on the same data, parent E epochs + this run's k epochs give the
 * weights of one run of E + k epochs. Without it only the backbone is carried over: a fresh
 * projection head, optimizer and data order from `seed`.
 */
export interface SimclrWarmStart {
  /** Names the parent in this run's checkpoint fingerprint (a checkpoint of another lineage is refused). */
  parent: string;
  /** Backbone weights, then (with `state`) the projection head's, in getWeights() order. */
  weights: tf.Tensor[];
  state?: { optimizer: OptimizerState; rngState: number };
}

/**
 * The warm start a saved encoder gives: its run's final checkpoint when `checkpointDir` holds
 * one (weights of backbone and head, optimizer, data-order RNG), else the backbone of the
 * model saved in `modelDir`. The caller disposes `weights` and the optimizer slots.
 */
export async function readWarmStart(parent: string, modelDir: string, checkpointDir?: string): Promise<SimclrWarmStart> {
  const ckpt = checkpointDir ? await loadCheckpoint(checkpointDir, null) : undefined;
  if (ckpt) return { parent, weights: ckpt.weights, state: { optimizer: ckpt.optimizer, rngState: ckpt.rngState } };
  const model = await loadModel(modelDir);
  try {
    return { parent, weights: model.getWeights().map((w) => w.clone()) };
  } finally {
    model.dispose();
  }
}

/** Why the warm start's tensors cannot be loaded into these weights (checked before any is changed), or undefined. */
function warmStartMisfit(warm: SimclrWarmStart, model: tf.Tensor[], encoderWeights: number, vars: tf.Variable[]): string | undefined {
  const want = warm.state ? model : model.slice(0, encoderWeights);
  if (warm.weights.length !== want.length) return `${warm.weights.length} weight tensors, the model has ${want.length}`;
  const i = want.findIndex((w, k) => !tf.util.arraysEqual(w.shape, warm.weights[k].shape));
  if (i >= 0) return `weight ${i} has shape [${warm.weights[i].shape}], the model's is [${want[i].shape}]`;
  const opt = warm.state?.optimizer;
  if (opt && (opt.kind !== 'adam' || opt.slots.length !== 2 * vars.length))
    return `optimizer state is ${opt.kind} with ${opt.slots.length} slots`;
  return undefined;
}

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
  warm?: SimclrWarmStart,
): Promise<{ encoder: tfl.LayersModel; losses: number[]; resumedFromEpoch: number; warmStartRefused?: string }> {
  if (source.height !== source.width) {
    throw new Error(`trainSimclr: images must be square, got ${source.height}x${source.width}`);
  }
  const encoder = buildResNet18({ stem: cfg.stem, width: cfg.width, inputSize: source.height, seed });
  const head = buildProjectionHead(featureDim(cfg.width), cfg.projectionDim, seed ^ HEAD_SEED_SALT);
  const vars = trainableVariables([...encoder.trainableWeights, ...head.trainableWeights]);
  const optimizer = new Adam(vars, cfg.lr, SIMCLR_BETAS[0], SIMCLR_BETAS[1]);
  const encoderWeights = encoder.getWeights().length;
  const { height: h, width: w } = source;
  let rng = new Rng(seed).fork(DATA_STREAM_SALT);
  // A parent that does not fit (another width, a reused copy of another architecture) is refused
  // here, before any epoch: the run starts from scratch and says why.
  let warmStartRefused: string | undefined;
  if (warm) {
    const misfit = warmStartMisfit(warm, [...encoder.getWeights(), ...head.getWeights()], encoderWeights, vars);
    if (misfit) {
      warmStartRefused = `parent encoder ${warm.parent.slice(0, 12)} does not fit this model (${misfit})`;
      warm = undefined;
    } else {
      encoder.setWeights(warm.weights.slice(0, encoderWeights));
      if (warm.state) {
        head.setWeights(warm.weights.slice(encoderWeights));
        optimizer.load(warm.state.optimizer);
        rng = Rng.fromState(warm.state.rngState);
      }
    }
  }
  // Epochs are left out so that a finished run can be extended by raising them; the parent is
  // in, so that a checkpoint of another lineage is never resumed.
  const { epochs: _epochs, warmStart: _warmStart, ...shape } = cfg;
  const fingerprint = JSON.stringify({
    run: 'simclr',
    v: 1,
    cfg: shape,
    seed,
    n: source.size,
    size: source.height,
    ...(warm ? { parent: warm.parent, state: warm.state !== undefined } : {}),
  });
  try {
    const { losses, resumedFromEpoch } = await runEpochs({
      name: 'simclr',
      epochs: cfg.epochs,
      pool: Int32Array.from({ length: source.size }, (_, i) => i),
      batchSize: cfg.batchSize,
      minBatch: 2,
      rng,
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
    return { encoder, losses, resumedFromEpoch, ...(warmStartRefused ? { warmStartRefused } : {}) };
  } catch (err) {
    encoder.dispose();
    throw err;
  } finally {
    head.dispose();
    optimizer.dispose();
  }
}
