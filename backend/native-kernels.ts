// Fused kernels for what tfjs computes in many small ones on native TensorFlow, executed by op
// name through tfjs-node's binding (as tfjs-node's own kernels are), from the SimCLR profile
// (bench/simclr-profile.ts):
// - ml/batch-norm.ts's training kernels: TensorFlow's FusedBatchNormV3 in training mode and
//   FusedBatchNormGradV3 (oneDNN on the CPU, cuDNN on the GPU) instead of ~60 kernels per layer and step.
// - ReLU's gradient: tfjs takes dy * step(x), and tfjs-node's Step is six kernels (IsNan, Greater,
//   Fill, Select, ...) over the activation, ~15% of a ResNet step; TensorFlow's ReluGrad is one.
//   It differs only where x is NaN (0 instead of NaN), where the loss is NaN already.
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { BATCH_NORM_SAVED, BATCH_NORM_TRAINING, BATCH_NORM_TRAINING_GRAD } from '../ml/batch-norm.js';

/** What these kernels use of tfjs-node's NodeJSKernelBackend. */
interface NodeBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_FLOAT: number; TF_ATTR_STRING: number; TF_ATTR_BOOL: number; TF_FLOAT: number };
  executeSingleOutput(name: string, attrs: { name: string; type: number; value: unknown }[], inputs: TensorInfo[]): tf.Tensor;
  executeMultipleOutputs(
    name: string,
    attrs: { name: string; type: number; value: unknown }[],
    inputs: TensorInfo[],
    outputs: number,
  ): tf.Tensor[];
}

function attrs(b: NodeBackend, epsilon: number) {
  return [
    { name: 'T', type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT },
    { name: 'U', type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT },
    { name: 'epsilon', type: b.binding.TF_ATTR_FLOAT, value: epsilon },
    { name: 'data_format', type: b.binding.TF_ATTR_STRING, value: 'NHWC' },
    { name: 'is_training', type: b.binding.TF_ATTR_BOOL, value: true },
  ];
}

/** The forward op's own attribute: 1 makes the running statistics it returns this batch's (the layer keeps its own moving averages). */
const FORWARD_ONLY = (b: NodeBackend) => ({ name: 'exponential_avg_factor', type: b.binding.TF_ATTR_FLOAT, value: 1 });

const training: KernelConfig = {
  kernelName: BATCH_NORM_TRAINING,
  backendName: 'tensorflow',
  kernelFunc: ({ inputs, backend, attrs: a }) => {
    const b = backend as unknown as NodeBackend;
    const { x, scale, offset } = inputs as { x: tf.Tensor4D; scale: tf.Tensor1D; offset: tf.Tensor1D };
    const epsilon = (a as { epsilon: number }).epsilon;
    const none = tf.tensor1d([]);
    const [y, mean, unbiased, ...reserve] = b.executeMultipleOutputs(
      'FusedBatchNormV3',
      [...attrs(b, epsilon), FORWARD_ONLY(b)],
      [x, scale, offset, none, none],
      6,
    );
    none.dispose();
    // TensorFlow's batch_variance is Bessel-corrected on every device (its reserve spaces differ:
    // the variance on the CPU, the inverse deviation with cuDNN); the layer's moving average takes
    // the biased one, as tf.moments gives it.
    const n = x.size / x.shape[3];
    const biased = tf.mul(unbiased, (n - 1) / n);
    unbiased.dispose();
    if (reserve.length !== BATCH_NORM_SAVED) throw new Error(`FusedBatchNormV3 returned ${3 + reserve.length} outputs, expected 6`);
    return [y, mean, biased, ...reserve];
  },
};

const gradient: KernelConfig = {
  kernelName: BATCH_NORM_TRAINING_GRAD,
  backendName: 'tensorflow',
  kernelFunc: ({ inputs, backend, attrs: a }) => {
    const b = backend as unknown as NodeBackend;
    const input = (name: string): TensorInfo => {
      const t = inputs[name];
      if (!t) throw new Error(`${BATCH_NORM_TRAINING_GRAD}: no input ${name}`);
      return t;
    };
    const [dy, x, scale] = [input('dy'), input('x'), input('scale')];
    const reserve = Array.from({ length: BATCH_NORM_SAVED }, (_, i) => input(`saved${i}`));
    const epsilon = (a as { epsilon: number }).epsilon;
    const [dx, dScale, dOffset, ...unused] = b.executeMultipleOutputs(
      'FusedBatchNormGradV3',
      attrs(b, epsilon),
      [dy, x, scale, ...reserve],
      5,
    );
    tf.dispose(unused);
    return [dx, dScale, dOffset];
  },
};

const RELU_GRAD = 'BackdoorAuditReluGrad';
const reluGrad: KernelConfig = {
  kernelName: RELU_GRAD,
  backendName: 'tensorflow',
  kernelFunc: ({ inputs, backend }) => {
    const b = backend as unknown as NodeBackend;
    const { dy, x } = inputs as { dy: tf.Tensor; x: tf.Tensor };
    return b.executeSingleOutput('ReluGrad', [{ name: 'T', type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT }], [dy, x]);
  },
};

let registered = false;
/** Registers the kernels for the `tensorflow` backend, and ReLU's gradient that uses one (idempotent). */
export function registerNativeKernels(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel(training);
  tf.registerKernel(gradient);
  tf.registerKernel(reluGrad);
  // Replaces tfjs-core's gradient of Relu for every backend: the others keep its formula.
  tf.registerGradient({
    kernelName: 'Relu',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => {
      const [x] = saved;
      const g = Array.isArray(dy) ? dy[0] : dy;
      return {
        x: () =>
          x.dtype === 'float32' && g.dtype === 'float32' && tf.getKernel(RELU_GRAD, tf.getBackend())
            ? (tf.engine().runKernel(RELU_GRAD, { dy: g, x }) as tf.Tensor)
            : tf.mul(g, tf.cast(tf.step(x), 'float32')),
      };
    },
  });
}
