// Batch normalization for the ResNet, with one fused kernel per direction where the backend has
// one (issue 12's SimCLR profile). tfjs-layers' BatchNormalization trains through tf.moments and
// tf.batchNorm: about 60 elementwise and reduction kernels over the activation per layer and step
// (forward and gradient), which was about half of a SimCLR step on native TensorFlow. TensorFlow's own
// FusedBatchNormV3 / FusedBatchNormGradV3 do each direction in one pass (162 ms -> 14 ms for
// forward + gradient of a [64, 32, 32, 64] activation on 2 cores). Backends register the kernels
// below when they have them (backend/native-kernels.ts); elsewhere the layer computes exactly
// what tfjs-layers' layer computes, with the same ops.
//
// The layer is tfjs-layers' BatchNormalization for channels-last inputs with center and scale:
// the same weights in the same order (gamma, beta, moving_mean, moving_variance), the same
// moving-average update with the biased batch variance, the same inference path. It is saved as
// a BatchNormalization with that layer's config, so a saved model stays readable by any tfjs
// (and loads as tfjs-layers' own layer, whose inference is the same single kernel).
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

/** tfjs-layers' shape type (null: a dimension of any size). */
type Shape = (number | null)[];

/**
 * Training-mode batch norm over all axes but the last. Inputs `x` (rank 4, NHWC), `scale`,
 * `offset`; attr `epsilon`. Outputs `[y, batchMean, batchVariance (biased), ...saved]`: what
 * the kernel saves for its gradient (any number of tensors, passed back in order).
 */
export const BATCH_NORM_TRAINING = 'BackdoorAuditBatchNormTraining';
/** Its gradient: inputs `dy`, `x`, `scale` and the saved outputs as `saved0`, `saved1`, ...; outputs `[dx, dScale, dOffset]`. */
export const BATCH_NORM_TRAINING_GRAD = 'BackdoorAuditBatchNormTrainingGrad';
/** How many tensors a backend's training kernel saves for its gradient (TensorFlow: its three reserve spaces). */
export const BATCH_NORM_SAVED = 3;

let gradientRegistered = false;
function registerGradient(): void {
  if (gradientRegistered) return;
  gradientRegistered = true;
  tf.registerGradient({
    kernelName: BATCH_NORM_TRAINING,
    inputsToSave: ['x', 'scale'],
    outputsToSave: [false, false, false, ...Array<boolean>(BATCH_NORM_SAVED).fill(true)],
    // The batch statistics (outputs 1 and 2) feed only the moving averages, which take no gradient.
    gradFunc: (dy, saved, attrs) => {
      const [x, scale, ...reserve] = saved;
      const inputs: tf.NamedTensorMap = { dy: Array.isArray(dy) ? dy[0] : dy, x, scale };
      reserve.forEach((t, i) => (inputs[`saved${i}`] = t));
      const [dx, dScale, dOffset] = tf
        .engine()
        .runKernel(BATCH_NORM_TRAINING_GRAD, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { x: () => dx, scale: () => dScale, offset: () => dOffset };
    },
  });
}

/** Whether the active backend has the fused training kernels. */
function fusedAvailable(): boolean {
  const backend = tf.getBackend();
  return tf.getKernel(BATCH_NORM_TRAINING, backend) !== undefined && tf.getKernel(BATCH_NORM_TRAINING_GRAD, backend) !== undefined;
}

/** y, batch mean and biased batch variance of channels-last `x` in training mode. */
export function batchNormTraining(
  x: tf.Tensor,
  scale: tf.Tensor1D,
  offset: tf.Tensor1D,
  epsilon: number,
): [tf.Tensor, tf.Tensor1D, tf.Tensor1D] {
  if (x.rank === 4 && fusedAvailable()) {
    registerGradient();
    const [y, mean, variance, ...reserve] = tf.engine().runKernel(BATCH_NORM_TRAINING, { x, scale, offset }, { epsilon }) as tf.Tensor[];
    tf.dispose(reserve); // the tape keeps its own references to what the gradient needs
    return [y, mean as tf.Tensor1D, variance as tf.Tensor1D];
  }
  // tfjs-layers' own computation (its regularNormalizeBatchInTraining).
  const { mean, variance } = tf.moments(x, [...Array(x.rank - 1).keys()]);
  const y = tf.batchNorm(x as tf.Tensor4D, mean, variance, offset, scale, epsilon);
  return [y, mean as tf.Tensor1D, variance as tf.Tensor1D];
}

export interface BatchNormArgs {
  momentum: number;
  epsilon: number;
  name?: string;
}

/** Channels-last batch normalization, trained through fused kernels where the backend has them. */
export class BatchNorm extends tfl.layers.Layer {
  readonly momentum: number;
  readonly epsilon: number;
  private gamma?: tfl.LayerVariable;
  private beta?: tfl.LayerVariable;
  private movingMean?: tfl.LayerVariable;
  private movingVariance?: tfl.LayerVariable;

  constructor(args: BatchNormArgs) {
    super(args.name ? { name: args.name } : {});
    this.momentum = args.momentum;
    this.epsilon = args.epsilon;
    this.supportsMasking = true;
  }

  override build(inputShape: Shape | Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    const channels = shape[shape.length - 1];
    if (channels == null) throw new Error(`${this.name}: the last axis of the input must have a defined size, got [${shape.join(', ')}]`);
    // tfjs-layers' order and names: the weights of a BatchNormalization layer load into these.
    this.gamma = this.addWeight('gamma', [channels], 'float32', tfl.initializers.ones(), undefined, true);
    this.beta = this.addWeight('beta', [channels], 'float32', tfl.initializers.zeros(), undefined, true);
    this.movingMean = this.addWeight('moving_mean', [channels], 'float32', tfl.initializers.zeros(), undefined, false);
    this.movingVariance = this.addWeight('moving_variance', [channels], 'float32', tfl.initializers.ones(), undefined, false);
    this.built = true;
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape | Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const gamma = this.gamma!.read() as tf.Tensor1D;
      const beta = this.beta!.read() as tf.Tensor1D;
      if (!kwargs.training) {
        return tf.batchNorm(
          x as tf.Tensor4D,
          this.movingMean!.read() as tf.Tensor1D,
          this.movingVariance!.read() as tf.Tensor1D,
          beta,
          gamma,
          this.epsilon,
        );
      }
      const [y, mean, variance] = batchNormTraining(x, gamma, beta, this.epsilon);
      // tfjs-layers' update: moving -= (moving - batch) * (1 - momentum).
      for (const [variable, value] of [
        [this.movingMean!, mean],
        [this.movingVariance!, variance],
      ] as const) {
        tf.tidy(() => {
          const orig = variable.read();
          variable.write(tf.sub(orig, tf.mul(tf.sub(orig, value), 1 - this.momentum)));
        });
      }
      return y;
    });
  }

  /** Saved as tfjs-layers' own class (see the top of this file). */
  override getClassName(): string {
    return 'BatchNormalization';
  }

  override getConfig(): tf.serialization.ConfigDict {
    const standard = tfl.layers.batchNormalization({ axis: -1, momentum: this.momentum, epsilon: this.epsilon }).getConfig();
    return { ...standard, ...super.getConfig() };
  }
}
