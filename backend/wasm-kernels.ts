// Training kernels for the WebAssembly backend. tfjs-backend-wasm 4.22 runs inference but lacks
// Conv2DBackpropFilter (and a few other gradient kernels), its Conv2DBackpropInput is a scalar
// loop, and its BatchMatMul only reaches XNNPACK's fast GEMM when neither operand is
// transposed — which is exactly the case in every backward pass. The kernels here route all
// heavy work through the backend's own XNNPACK GEMM and convolution and keep the glue
// (im2col, col2im) to plain copies on the wasm heap. The convolution gradients are in
// backend/wasm-conv-grads.ts, the plumbing and heap helpers in backend/wasm-heap.ts.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelBackend, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { conv2DBackpropFilter, conv2DBackpropInput } from './wasm-conv-grads.js';
import { addKernel, dispose, heapF32, offsetF32, replaceKernel, reshaped, transposed2D, type Wrapped } from './wasm-heap.js';

const backend_util = tf.backend_util;

/** Kernels this module adds to (or replaces on) the wasm backend, with how each is computed. */
export const wasmTrainingKernels: Readonly<Record<string, string>> = {
  Conv2DBackpropFilter: 'im2col + XNNPACK GEMM (new)',
  Conv2DBackpropInput: 'stride 1: XNNPACK convolution with the flipped filter; else GEMM + col2im (replaces a scalar loop)',
  BatchMatMul: 'transposed operands made explicit so XNNPACK GEMM applies (wraps the original)',
  _FusedMatMul: 'same as BatchMatMul (wraps the original)',
  Identity: 'shares the input buffer instead of copying it (replaces the original)',
  Tile: 'repeat-whole case as doubling heap copies (wraps the original)',
  Sum: 'reduction over leading axes as a column-sum loop (wraps the original)',
  Mean: 'reduction over leading axes as a column-sum loop (wraps the original)',
  UnsortedSegmentSum: 'row scatter-add on the heap (new; gradient of gather)',
  Einsum: 'computed on the cpu backend (new; used by rgbToGrayscale)',
  DepthwiseConv2dNativeBackpropFilter: 'computed on the cpu backend (new)',
  DepthwiseConv2dNativeBackpropInput: 'computed on the cpu backend (new)',
  MaxPoolGrad: 'argmax per window recomputed on the heap, as on cpu (replaces the original, wrong for non-positive maxima and ties)',
};

let registered = false;

/**
 * Registers on the wasm backend every kernel that training ResNet/SimCLR/flow models needs and
 * that tfjs-backend-wasm lacks or runs slowly. Idempotent; safe before or after
 * `tf.setBackend('wasm')`.
 */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  const originalMatMul = replaceKernel('BatchMatMul', (orig) => matMulKernel(orig));
  replaceKernel('_FusedMatMul', (orig) => matMulKernel(orig));
  replaceKernel('Conv2DBackpropInput', () => conv2DBackpropInput(originalMatMul));
  addKernel('Conv2DBackpropFilter', conv2DBackpropFilter(originalMatMul));
  replaceKernel('Identity', () => identityKernel);
  replaceKernel('Tile', (orig) => tileKernel(orig));
  replaceKernel('Sum', (orig) => leadingReduce(orig, false));
  replaceKernel('Mean', (orig) => leadingReduce(orig, true));
  addKernel('UnsortedSegmentSum', unsortedSegmentSum);
  replaceKernel('MaxPoolGrad', () => maxPoolGrad);
  for (const name of ['Einsum', 'DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput']) {
    addKernel(name, onCpu(name));
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix product

/**
 * The wasm backend's BatchMatMul reaches XNNPACK only for an untransposed single matrix pair;
 * otherwise it falls back to a scalar blocked loop that is 5-20x slower. Materialising the
 * transpose (a fast copy kernel) and taking the XNNPACK path is cheaper for any real size.
 */
function matMulKernel(orig: Wrapped): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const a = inputs['a']!;
    const b = inputs['b']!;
    const transposeA = attrs['transposeA'] === true;
    const transposeB = attrs['transposeB'] === true;
    const batchA = a.shape.slice(0, -2).reduce((p, d) => p * d, 1);
    const batchB = b.shape.slice(0, -2).reduce((p, d) => p * d, 1);
    const small = a.shape.reduce((p, d) => p * d, 1) < 4096 && b.shape.reduce((p, d) => p * d, 1) < 4096;
    if ((!transposeA && !transposeB) || batchA !== 1 || batchB !== 1 || a.dtype !== 'float32' || small) {
      return orig.call(wasm, inputs, attrs);
    }
    const temps: TensorInfo[] = [];
    // The transposed copy keeps the operand's rank: _FusedMatMul reads its inputs as rank 3.
    const explicit = (x: TensorInfo, flip: boolean): TensorInfo => {
      if (!flip) return x;
      const rank = x.shape.length;
      const [r, c] = [x.shape[rank - 2]!, x.shape[rank - 1]!];
      const m2 = reshaped(wasm, x, [r, c]);
      const t = transposed2D(wasm, m2);
      const back = reshaped(wasm, t, [...x.shape.slice(0, -2), c, r]);
      temps.push(m2, t, back);
      return back;
    };
    const out = orig.call(
      wasm,
      { ...inputs, a: explicit(a, transposeA), b: explicit(b, transposeB) },
      {
        ...attrs,
        transposeA: false,
        transposeB: false,
      },
    );
    dispose(wasm, ...temps);
    return out;
  };
}

// ---------------------------------------------------------------------------------------------
// Identity

/**
 * The engine clones every tensor it saves for the backward pass through Identity; the wasm
 * kernel copies the buffer, doubling the memory of a training step's saved activations (the
 * heap is capped at 4 GiB). Tensor buffers are never written after creation (a Variable's
 * assign swaps buffers), so sharing with a reference count — what Reshape already does — is
 * safe, as on the cpu backend.
 */
const identityKernel: KernelFunc = ({ inputs, backend }) => {
  const x = inputs['x']!;
  (backend as BackendWasm).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
};

// ---------------------------------------------------------------------------------------------
// Batch-norm helpers: the gradient of batch norm tiles per-channel vectors to the full
// activation shape and reduces over N, H, W. The backend's Tile walks every element through an
// index computation, and its Sum/Mean transpose the whole activation to make the reduced axes
// innermost. Both patterns are plain strided loops on NHWC data.

/** Tile where only leading unit axes are repeated: the output is the input repeated whole. */
function tileKernel(orig: Wrapped): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const x = inputs['x']!;
    const reps = attrs['reps'] as number[];
    const firstData = x.shape.findIndex((d) => d !== 1);
    const leading = firstData < 0 ? x.shape.length : firstData;
    const simple = x.dtype === 'float32' && reps.every((r, i) => i < leading || r === 1);
    if (!simple) return orig.call(wasm, inputs, attrs);
    const outShape = x.shape.map((d, i) => d * reps[i]!);
    const out = wasm.makeOutput(outShape, 'float32');
    const heap = heapF32(wasm);
    const size = x.shape.reduce((p, d) => p * d, 1);
    const total = outShape.reduce((p, d) => p * d, 1);
    const dst = offsetF32(wasm, out);
    heap.copyWithin(dst, offsetF32(wasm, x), offsetF32(wasm, x) + size);
    // Doubling copies: log2(repeats) memmoves instead of one per repeat.
    for (let filled = size; filled < total; filled *= 2) {
      heap.copyWithin(dst + filled, dst, dst + Math.min(filled, total - filled));
    }
    return out;
  };
}

/** Sum or Mean over the leading axes [0, k) of a float32 tensor: per-column sums of [R, C]. */
function leadingReduce(orig: Wrapped, mean: boolean): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const x = inputs['x']!;
    const rank = x.shape.length;
    const axis = attrs['axis'] as number | number[];
    const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)).sort((a, b) => a - b);
    const leadingOnly = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (x.dtype !== 'float32' || !leadingOnly) return orig.call(wasm, inputs, attrs);
    const k = axes.length;
    const rows = x.shape.slice(0, k).reduce((p, d) => p * d, 1);
    const cols = x.shape.slice(k).reduce((p, d) => p * d, 1);
    const outShape = attrs['keepDims'] === true ? [...new Array<number>(k).fill(1), ...x.shape.slice(k)] : x.shape.slice(k);
    const out = wasm.makeOutput(outShape, 'float32');
    const src = wasm.typedArrayFromHeap(x) as Float32Array;
    const acc = new Float64Array(cols);
    for (let r = 0, at = 0; r < rows; r++, at += cols) {
      for (let c = 0; c < cols; c++) acc[c]! += src[at + c]!;
    }
    const dst = wasm.typedArrayFromHeap(out) as Float32Array;
    const scale = mean ? 1 / rows : 1;
    for (let c = 0; c < cols; c++) dst[c] = acc[c]! * scale;
    return out;
  };
}

// ---------------------------------------------------------------------------------------------
// Pooling

const maxPoolGradOnCpu = onCpu('MaxPoolGrad');

/**
 * dx of a max pool: each output's gradient goes to the first strictly largest pixel of its
 * window in row-major order (the cpu rule; NaN never wins, padding is not a candidate).
 * tfjs-backend-wasm 4.22's kernel is exact only where a window's maximum is positive and unique:
 * it misroutes windows whose maximum is zero or negative and gives ties to the last pixel. Sums are kept in float64 in output order and rounded once, which is the
 * order and precision of the cpu kernel, so overlapping windows give bit-identical results.
 */
const maxPoolGrad: KernelFunc = (args) => {
  const { inputs, backend, attrs = {} } = args;
  const wasm = backend as BackendWasm;
  const dy = inputs['dy']!;
  const x = inputs['input']!;
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') return maxPoolGradOnCpu(args);
  const p = backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    attrs['filterSize'] as number | [number, number],
    attrs['strides'] as number | [number, number],
    1,
    attrs['pad'] as 'same' | 'valid' | number | tf.backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
  );
  const { batchSize: N, inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo } = p;
  const { strideHeight: SH, strideWidth: SW, effectiveFilterHeight: KH, effectiveFilterWidth: KW } = p;
  const top = p.padInfo.top;
  const left = p.padInfo.left;
  const dx = wasm.makeOutput(x.shape, 'float32');
  const heap = heapF32(wasm);
  const xAt = offsetF32(wasm, x);
  const dyAt = offsetF32(wasm, dy);
  const dxAt = offsetF32(wasm, dx);
  const imageSize = H * W * C;
  const acc = new Float64Array(imageSize); // one image at a time bounds the scratch memory
  const best = new Float64Array(C);
  const where = new Int32Array(C);
  for (let n = 0; n < N; n++) {
    acc.fill(0);
    const image = xAt + n * imageSize;
    let g = dyAt + n * Ho * Wo * C;
    for (let ho = 0; ho < Ho; ho++) {
      const h0 = ho * SH - top;
      const hLo = Math.max(0, h0);
      const hHi = Math.min(H, h0 + KH);
      for (let wo = 0; wo < Wo; wo++, g += C) {
        const w0 = wo * SW - left;
        const wLo = Math.max(0, w0);
        const wHi = Math.min(W, w0 + KW);
        best.fill(-Infinity);
        where.fill(-1);
        for (let h = hLo; h < hHi; h++) {
          for (let w = wLo; w < wHi; w++) {
            const pixel = (h * W + w) * C;
            for (let c = 0; c < C; c++) {
              const v = heap[image + pixel + c]!;
              if (v > best[c]!) {
                best[c] = v;
                where[c] = pixel + c;
              }
            }
          }
        }
        for (let c = 0; c < C; c++) {
          const at = where[c]!;
          if (at >= 0) acc[at]! += heap[g + c]!;
        }
      }
    }
    heap.set(acc, dxAt + n * imageSize); // rounds each sum to float32 once
  }
  return dx;
};

// ---------------------------------------------------------------------------------------------
// Small kernels

/** out[s] = Σ_{i: ids[i] = s} x[i]; ids outside [0, numSegments) are dropped, as on cpu. */
const unsortedSegmentSum: KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const wasm = backend as BackendWasm;
  const x = inputs['x']!;
  const ids = inputs['segmentIds']!;
  const numSegments = attrs['numSegments'] as number;
  const idCount = ids.shape.reduce((p, d) => p * d, 1);
  const inner = x.shape.slice(ids.shape.length).reduce((p, d) => p * d, 1);
  const out = wasm.makeOutput([numSegments, ...x.shape.slice(ids.shape.length)], x.dtype);
  const dst = wasm.typedArrayFromHeap(out) as Float32Array | Int32Array;
  dst.fill(0);
  const src = wasm.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const seg = wasm.typedArrayFromHeap(ids) as Int32Array;
  for (let i = 0; i < idCount; i++) {
    const s = seg[i]!;
    if (s < 0 || s >= numSegments) continue;
    const from = i * inner;
    const to = s * inner;
    for (let k = 0; k < inner; k++) dst[to + k]! += src[from + k]!;
  }
  return out;
};

/**
 * Runs the cpu backend's kernel on copies of the inputs. For rare, small kernels only: the
 * copies cost more than the arithmetic.
 */
function onCpu(name: string): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const cpu = tf.findBackend('cpu') as KernelBackend | null;
    const kernel = tf.getKernel(name, 'cpu');
    if (!cpu || !kernel) throw new Error(`wasm-kernels: ${name} needs the cpu backend's kernel`);
    const owned: TensorInfo[] = [];
    const toCpu = (t: TensorInfo): TensorInfo => {
      const info = { dataId: cpu.write(wasm.readSync(t.dataId), t.shape, t.dtype), shape: t.shape, dtype: t.dtype };
      owned.push(info);
      return info;
    };
    const cpuInputs = (
      Array.isArray(inputs)
        ? (inputs as TensorInfo[]).map(toCpu)
        : Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, toCpu(t!)]))
    ) as NamedTensorInfoMap;
    const result = kernel.kernelFunc({ inputs: cpuInputs, backend: cpu, attrs });
    const back = (t: TensorInfo): TensorInfo => {
      const values = cpu.readSync(t.dataId);
      cpu.disposeData(t.dataId);
      return wasm.makeOutput(t.shape, t.dtype, undefined, values);
    };
    const out = Array.isArray(result) ? result.map(back) : back(result);
    for (const t of owned) cpu.disposeData(t.dataId);
    return out;
  };
}
