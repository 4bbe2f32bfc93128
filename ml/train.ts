// Paper step 9: retrain a ResNet-18 classifier on the cleansed dataset. SGD, momentum 0.9,
// weight decay 5e-4 as an L2 term on the gradient (PyTorch's coupled form, see ml/optim.ts),
// lr / 10 at each milestone epoch, random resized crop + horizontal flip.
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ImageSource } from '../data/types.js';
import { toFloatImages, trainAugment } from './augment.js';
import type { RetrainConfig, Stem } from './config.js';
import { inferBatches } from './features.js';
import { gradientStep, runEpochs, trainableVariables, type TrainHooks } from './loop.js';
import { SgdMomentum } from './optim.js';
import { Rng } from './random.js';
import { buildResNet18 } from './resnet.js';

/** Learning rate of 0-based `epoch`: lr divided by 10 once for every milestone reached (PyTorch MultiStepLR). */
export function learningRateAt(cfg: Pick<RetrainConfig, 'lr' | 'milestones'>, epoch: number): number {
  const passed = cfg.milestones.filter((m) => epoch >= m).length;
  return cfg.lr / 10 ** passed;
}

const DATA_STREAM_SALT = 9;

/**
 * Trains a classifier on the samples whose `labels` entry is >= 0 (-1 = dropped from the
 * cleansed set), with those labels instead of the source's. Classes = source.classes.
 */
export async function trainClassifier(
  source: ImageSource,
  labels: Int32Array,
  cfg: RetrainConfig,
  o: { seed: number; stem: Stem; inputSize: number; hooks?: TrainHooks },
): Promise<{ model: tfl.LayersModel; losses: number[]; resumedFromEpoch: number }> {
  const classes = source.classes.length;
  if (labels.length !== source.size) throw new Error(`trainClassifier: ${labels.length} labels for ${source.size} samples`);
  if (source.height !== o.inputSize || source.width !== o.inputSize) {
    throw new Error(`trainClassifier: images are ${source.height}x${source.width}, inputSize is ${o.inputSize}`);
  }
  const pool: number[] = [];
  labels.forEach((y, i) => {
    if (!Number.isInteger(y) || y < -1 || y >= classes)
      throw new Error(`trainClassifier: label ${y} of sample ${i} is outside -1..${classes - 1}`);
    if (y >= 0) pool.push(i);
  });
  if (pool.length === 0) throw new Error('trainClassifier: every sample is dropped (label -1)');

  const model = buildResNet18({ stem: o.stem, width: cfg.width, inputSize: o.inputSize, classes, seed: o.seed });
  const vars = trainableVariables(model.trainableWeights);
  const optimizer = new SgdMomentum(vars, cfg.lr, cfg.momentum, cfg.weightDecay);
  const { epochs: _epochs, ...shape } = cfg;
  // The labels define the run as much as the config does.
  const labelHash = labels.reduce((h, y) => Math.imul(h ^ (y + 2), 0x01000193) >>> 0, 0x811c9dc5);
  const fingerprint = JSON.stringify({
    run: 'classifier',
    v: 1,
    cfg: shape,
    seed: o.seed,
    stem: o.stem,
    n: source.size,
    size: o.inputSize,
    labelHash,
  });
  try {
    const { losses, resumedFromEpoch } = await runEpochs({
      name: 'classifier',
      epochs: cfg.epochs,
      pool: Int32Array.from(pool),
      batchSize: cfg.batchSize,
      minBatch: 1,
      rng: new Rng(o.seed).fork(DATA_STREAM_SALT),
      fingerprint,
      getWeights: () => model.getWeights(),
      setWeights: (ws) => model.setWeights(ws),
      optimizer,
      beforeEpoch: (epoch) => {
        optimizer.lr = learningRateAt(cfg, epoch);
      },
      hooks: o.hooks,
      step: async (idx, rng) => {
        const pixels = await source.readImages(idx);
        const x = tf.tidy(() => trainAugment(toFloatImages(pixels, idx.length, o.inputSize, o.inputSize), rng));
        const y = tf.tidy(() =>
          tf.oneHot(
            tf.tensor1d(
              Int32Array.from(idx, (i) => labels[i]),
              'int32',
            ),
            classes,
          ),
        );
        try {
          return await gradientStep(
            () => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor2D) as tf.Scalar,
            vars,
            optimizer,
          );
        } finally {
          tf.dispose([x, y]);
        }
      },
    });
    return { model, losses, resumedFromEpoch };
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    optimizer.dispose();
  }
}

/** Predicted class (argmax of the logits) of every sample, in inference mode. */
export async function predict(
  model: tfl.LayersModel,
  source: ImageSource,
  o: { batchSize?: number; signal?: AbortSignal } = {},
): Promise<Int32Array> {
  const out = new Int32Array(source.size);
  await inferBatches(model, source, o, 'predict', (start, rows, cols) => {
    for (let r = 0; r < rows.length / cols; r++) {
      let best = 0;
      for (let c = 1; c < cols; c++) if (rows[r * cols + c] > rows[r * cols + best]) best = c;
      out[start + r] = best;
    }
  });
  return out;
}
