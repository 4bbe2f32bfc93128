// One SimCLR training step of the audit's network (ResNet-18, CIFAR stem, 32x32) on random
// pixels, built the way ml/simclr.ts trains it: both views through the network together, NT-Xent,
// Adam. Shared by bench speed (timing) and bench simclr-profile (where the time goes).
import * as tf from '@tensorflow/tfjs-core';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { defaultSimclrEncoder } from '../../ml/config.js';
import { gradientStep, trainableVariables } from '../../ml/loop.js';
import { Adam } from '../../ml/optim.js';
import { Rng } from '../../ml/random.js';
import { buildResNet18, featureDim } from '../../ml/resnet.js';
import { buildProjectionHead, ntXentLoss, SIMCLR_BETAS } from '../../ml/simclr.js';

export interface SimclrBenchStep {
  /** One optimizer step on the fixed views; resolves to the loss. */
  step: () => Promise<number>;
  encoder: LayersModel;
  /** `n` random 32x32 RGB images in [0, 1), from the step's seeded generator. */
  pixels: (n: number) => Float32Array;
  dispose: () => void;
}

export function simclrBenchStep(width: number, batch: number, seed = 0): SimclrBenchStep {
  const encoder = buildResNet18({ stem: 'cifar', width, inputSize: 32, seed });
  const head = buildProjectionHead(featureDim(width), defaultSimclrEncoder.projectionDim, seed + 1);
  const vars = trainableVariables([...encoder.trainableWeights, ...head.trainableWeights]);
  const optimizer = new Adam(vars, 3e-4, SIMCLR_BETAS[0], SIMCLR_BETAS[1]);
  const rng = new Rng(seed);
  const pixels = (n: number) => Float32Array.from({ length: n * 32 * 32 * 3 }, () => rng.next());
  const views = tf.tensor4d(pixels(2 * batch), [2 * batch, 32, 32, 3]);
  const step = () =>
    gradientStep(
      () => {
        const z = head.apply(encoder.apply(views, { training: true }) as tf.Tensor, { training: true }) as tf.Tensor2D;
        const [z1, z2] = tf.split(z, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
        return ntXentLoss(z1, z2, 0.5);
      },
      vars,
      optimizer,
    );
  return {
    step,
    encoder,
    pixels,
    dispose: () => {
      views.dispose();
      optimizer.dispose();
      encoder.dispose();
      head.dispose();
    },
  };
}
