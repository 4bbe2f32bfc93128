// Two speed-ups for training on the pure-JS 'cpu' backend (tfjs-backend-cpu 4.22):
// - Conv2DBackpropFilter used TensorBuffer.get() per multiply-add, ~90% of a ResNet training
//   step (0.2 s for a 3x3 conv on a [20, 2, 2, 32] activation). This version walks the flat
//   NHWC arrays with contiguous inner loops and skips zero activations (ReLU outputs are about
//   half zeros). Same arithmetic, accumulated in float64.
// - Elementwise binary ops take a per-element index computation whenever an operand has
//   size-1 dims to broadcast, e.g. [N, H, W, C] * [1, 1, 1, C] (BatchNorm's gradients: ~25x
//   slower than [N, H, W, C] * [C]). Leading 1s never change numpy broadcasting, so they are
//   dropped before calling the stock kernel, which then takes its plain loop.
// - Sum and Mean over the leading axes ([N, H, W] of NHWC, BatchNorm's reductions) transpose
//   the whole tensor first; here they are column sums over the flat array.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';

interface CpuData {
  data: { get(id: object): { values: unknown } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
}

let registered = false;

/** Elementwise kernels whose broadcasting benefits from dropping leading 1s. */
const BINARY_OPS = ['Add', 'Sub', 'Multiply', 'RealDiv', 'SquaredDifference', 'Maximum', 'Minimum'];

/** `t` without leading size-1 dims, when `other` keeps the output rank; else `t` itself. */
function dropLeadingOnes(t: TensorInfo, other: TensorInfo): TensorInfo {
  let k = 0;
  while (k < t.shape.length - 1 && t.shape[k] === 1) k++;
  if (k === 0 || other.shape.length < t.shape.length) return t;
  return { dataId: t.dataId, shape: t.shape.slice(k), dtype: t.dtype };
}

/** Sum (or mean) over axes 0..k-1 of a float32 tensor, k < rank; undefined for other reductions. */
function leadingReduce(args: Parameters<KernelFunc>[0], mean: boolean): TensorInfo | undefined {
  const x = args.inputs.x as TensorInfo;
  const attrs = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
  if (x.dtype !== 'float32') return undefined;
  const axes = tf.util.parseAxisParam(attrs.axis, x.shape).sort((p, q) => p - q);
  const k = axes.length;
  if (k === 0 || k >= x.shape.length || axes.some((a, i) => a !== i)) return undefined;
  const backend = args.backend as unknown as CpuData;
  const v = backend.data.get(x.dataId).values as Float32Array;
  const rows = x.shape.slice(0, k).reduce((p, q) => p * q, 1);
  const cols = v.length / rows;
  const acc = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    for (let c = 0; c < cols; c++) acc[c] += v[off + c];
  }
  const rest = x.shape.slice(k);
  const shape = attrs.keepDims ? [...new Array<number>(k).fill(1), ...rest] : rest;
  return backend.makeTensorInfo(
    shape,
    'float32',
    Float32Array.from(acc, (a) => (mean ? a / rows : a)),
  );
}

function replace(config: KernelConfig): void {
  tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

/** Installs the kernels on the cpu backend (idempotent; a no-op where the cpu backend is absent). */
export function registerCpuKernels(): void {
  if (registered) return;
  const original = tf.getKernel('Conv2DBackpropFilter', 'cpu');
  if (!original) return;
  for (const name of ['Sum', 'Mean']) {
    const stock = tf.getKernel(name, 'cpu');
    if (!stock) continue;
    replace({
      kernelName: name,
      backendName: 'cpu',
      kernelFunc: (args) => leadingReduce(args, name === 'Mean') ?? stock.kernelFunc(args),
    });
  }
  for (const name of BINARY_OPS) {
    const stock = tf.getKernel(name, 'cpu');
    if (!stock) continue;
    replace({
      kernelName: name,
      backendName: 'cpu',
      kernelFunc: (args) => {
        const a = args.inputs.a as TensorInfo;
        const b = args.inputs.b as TensorInfo;
        // At most one side, so the other keeps the output's rank.
        const a2 = dropLeadingOnes(a, b);
        const b2 = a2 === a ? dropLeadingOnes(b, a) : b;
        return stock.kernelFunc(a2 === a && b2 === b ? args : { ...args, inputs: { a: a2, b: b2 } });
      },
    });
  }
  const fast: KernelFunc = (args) => {
    const { inputs, attrs } = args;
    const backend = args.backend as unknown as CpuData;
    const x = inputs.x as TensorInfo;
    const dy = inputs.dy as TensorInfo;
    const a = attrs as unknown as {
      strides: [number, number] | number;
      pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
      dataFormat: 'NHWC' | 'NCHW';
      dimRoundingMode?: 'floor' | 'round' | 'ceil';
      filterShape: [number, number, number, number];
    };
    if (a.dataFormat === 'NCHW' || x.dtype !== 'float32' || dy.dtype !== 'float32') return original.kernelFunc(args);
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      a.filterShape,
      a.strides,
      1,
      a.pad,
      a.dimRoundingMode,
      false,
      'channelsLast',
    );
    const xv = backend.data.get(x.dataId).values as Float32Array;
    const dyv = backend.data.get(dy.dataId).values as Float32Array;
    const {
      batchSize,
      inHeight,
      inWidth,
      inChannels,
      outHeight,
      outWidth,
      outChannels,
      strideHeight,
      strideWidth,
      filterHeight,
      filterWidth,
    } = info;
    const top = info.padInfo.top;
    const left = info.padInfo.left;
    const acc = new Float64Array(filterHeight * filterWidth * inChannels * outChannels);
    for (let b = 0; b < batchSize; b++) {
      for (let yR = 0; yR < outHeight; yR++) {
        for (let yC = 0; yC < outWidth; yC++) {
          const dyOff = ((b * outHeight + yR) * outWidth + yC) * outChannels;
          for (let wR = 0; wR < filterHeight; wR++) {
            const xR = yR * strideHeight + wR - top;
            if (xR < 0 || xR >= inHeight) continue;
            for (let wC = 0; wC < filterWidth; wC++) {
              const xC = yC * strideWidth + wC - left;
              if (xC < 0 || xC >= inWidth) continue;
              const xOff = ((b * inHeight + xR) * inWidth + xC) * inChannels;
              const wBase = (wR * filterWidth + wC) * inChannels;
              for (let d1 = 0; d1 < inChannels; d1++) {
                const v = xv[xOff + d1];
                if (v === 0) continue;
                const wOff = (wBase + d1) * outChannels;
                for (let d2 = 0; d2 < outChannels; d2++) acc[wOff + d2] += v * dyv[dyOff + d2];
              }
            }
          }
        }
      }
    }
    return backend.makeTensorInfo(info.filterShape, 'float32', Float32Array.from(acc));
  };
  replace({ kernelName: 'Conv2DBackpropFilter', backendName: 'cpu', kernelFunc: fast });
  registered = true;
}
