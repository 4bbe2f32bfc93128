// Convolution gradients for the wasm backend (registered by backend/wasm-kernels.ts): the
// filter gradient as im2col + XNNPACK GEMM, the input gradient as XNNPACK convolution with the
// flipped filter (stride 1) or GEMM + col2im, both in chunks of images bounded by a scratch size.
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { copyRows, dispose, gemm, heapF32, offsetF32, reshaped, runWasm, transposed2D, type Wrapped } from './wasm-heap.js';

/** Floats per im2col/col2im scratch buffer; bounds the extra heap a convolution gradient takes. */
const SCRATCH_FLOATS = 1 << 23;

/** Target rows (output pixels) per GEMM of the filter gradient. */
const FILTER_GRAD_ROWS = 1024;

type Conv2DInfo = tf.backend_util.Conv2DInfo;
const backend_util = tf.backend_util;

function conv2DInfoFor(xShape: number[], filterShape: number[], attrs: NamedAttrMap): Conv2DInfo {
  const dataFormat = backend_util.convertConv2DDataFormat((attrs['dataFormat'] as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC');
  if (dataFormat !== 'channelsLast') throw new Error('wasm-kernels: convolution gradients support NHWC only');
  const dilations = (attrs['dilations'] as number | [number, number] | undefined) ?? 1;
  const info = backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs['strides'] as number | [number, number],
    dilations,
    attrs['pad'] as 'same' | 'valid' | number | tf.backend_util.ExplicitPadding,
    attrs['dimRoundingMode'] as 'floor' | 'round' | 'ceil' | undefined,
    false,
    dataFormat,
  );
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) {
    throw new Error('wasm-kernels: convolution gradients support dilation 1 only');
  }
  return info;
}

/** How many images of the batch fit one scratch buffer of `floatsPerImage` each. */
function imagesPerChunk(batch: number, floatsPerImage: number): number {
  return Math.max(1, Math.min(batch, Math.floor(SCRATCH_FLOATS / Math.max(1, floatsPerImage))));
}

/**
 * Writes the im2col rows of images [n0, n0+count) of x into `col` ([count·Ho·Wo, kh·kw·Cin]).
 * The kw taps of one filter row read kw neighbouring pixels, which are contiguous in NHWC, so
 * each (output pixel, filter row) is one copy of kw·Cin floats (3x fewer calls than per tap),
 * with zeros where the taps fall in the padding.
 */
function im2col(heap: Float32Array, xAt: number, colAt: number, c: Conv2DInfo, n0: number, count: number): void {
  const { inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo, filterHeight: KH, filterWidth: KW } = c;
  const { strideHeight: SH, strideWidth: SW } = c;
  const top = c.padInfo.top;
  const left = c.padInfo.left;
  const span = KW * C;
  let dst = colAt;
  for (let n = n0; n < n0 + count; n++) {
    const image = xAt + n * H * W * C;
    for (let ho = 0; ho < Ho; ho++) {
      for (let wo = 0; wo < Wo; wo++) {
        const w0 = wo * SW - left;
        const lo = Math.max(0, w0);
        const hi = Math.min(W, w0 + KW);
        for (let i = 0; i < KH; i++) {
          const h = ho * SH - top + i;
          if (h < 0 || h >= H || hi <= lo) {
            heap.fill(0, dst, dst + span);
          } else {
            if (lo > w0) heap.fill(0, dst, dst + (lo - w0) * C);
            const at = dst + (lo - w0) * C;
            const src = image + (h * W + lo) * C;
            const len = (hi - lo) * C;
            if (len < 32) {
              // copyWithin's call overhead dominates for the stem's 3 channels.
              for (let k = 0; k < len; k++) heap[at + k] = heap[src + k]!;
            } else {
              heap.copyWithin(at, src, src + len);
            }
            if (hi < w0 + KW) heap.fill(0, dst + (hi - w0) * C, dst + span);
          }
          dst += span;
        }
      }
    }
  }
}

/** Adds the col rows back onto the image pixels they were taken from (the adjoint of im2col). */
function col2imAdd(heap: Float32Array, dxAt: number, colAt: number, c: Conv2DInfo, n0: number, count: number): void {
  const { inHeight: H, inWidth: W, inChannels: C, outHeight: Ho, outWidth: Wo, filterHeight: KH, filterWidth: KW } = c;
  const { strideHeight: SH, strideWidth: SW } = c;
  const top = c.padInfo.top;
  const left = c.padInfo.left;
  let src = colAt;
  for (let n = n0; n < n0 + count; n++) {
    const image = dxAt + n * H * W * C;
    for (let ho = 0; ho < Ho; ho++) {
      for (let wo = 0; wo < Wo; wo++) {
        for (let i = 0; i < KH; i++) {
          const h = ho * SH - top + i;
          for (let j = 0; j < KW; j++) {
            const w = wo * SW - left + j;
            if (h >= 0 && h < H && w >= 0 && w < W) {
              const dst = image + (h * W + w) * C;
              for (let k = 0; k < C; k++) heap[dst + k]! += heap[src + k]!;
            }
            src += C;
          }
        }
      }
    }
  }
}

/**
 * dW = Σ_chunks (dy_chunkᵀ · im2col(x_chunk))ᵀ. dyᵀ is the GEMM's left operand and the im2col
 * matrix its right one, so neither needs a transposed GEMM; one final small transpose gives
 * [kh·kw·Cin, Cout].
 */
export function conv2DBackpropFilter(matMul: Wrapped): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const x = inputs['x']!;
    const dy = inputs['dy']!;
    const filterShape = attrs['filterShape'] as number[];
    const c = conv2DInfoFor(x.shape, filterShape, attrs);
    const { batchSize: N, outHeight: Ho, outWidth: Wo, outChannels: Cout } = c;
    const K = c.filterHeight * c.filterWidth * c.inChannels;
    const pixels = Ho * Wo;
    // The rows are the GEMM's reduction axis; XNNPACK does not block it, so long chunks fall
    // out of cache (measured: 1024 rows is 1.7x faster than 32k rows at 32x32x64).
    const per = Math.max(1, Math.min(imagesPerChunk(N, pixels * K), Math.round(FILTER_GRAD_ROWS / pixels)));
    let sum: TensorInfo | undefined; // [Cout, K]
    for (let n0 = 0; n0 < N; n0 += per) {
      const count = Math.min(per, N - n0);
      const rows = count * pixels;
      const dyChunk = copyRows(wasm, dy, n0 * pixels, rows, Cout);
      const dyT = transposed2D(wasm, dyChunk);
      const col = wasm.makeOutput([rows, K], 'float32');
      im2col(heapF32(wasm), offsetF32(wasm, x), offsetF32(wasm, col), c, n0, count);
      const part = gemm(matMul, wasm, dyT, col);
      dispose(wasm, dyChunk, dyT, col);
      if (sum === undefined) sum = part;
      else {
        const next = runWasm('Add', wasm, { a: sum, b: part });
        dispose(wasm, sum, part);
        sum = next;
      }
    }
    const t = transposed2D(wasm, sum!);
    dispose(wasm, sum!);
    const out = reshaped(wasm, t, filterShape);
    dispose(wasm, t);
    return out;
  };
}

/**
 * W'[i, j, co, ci] = W[KH-1-i, KW-1-j, ci, co]. Flipping both spatial axes reverses the
 * flattened tap order, so this is one Cin/Cout transpose plus a reversed copy of the taps
 * (the backend's Reverse kernel is 4x slower than the whole rest).
 */
function flippedTransposedFilter(backend: BackendWasm, filter: TensorInfo): TensorInfo {
  const [KH, KW, Cin, Cout] = filter.shape as [number, number, number, number];
  const taps = KH * KW;
  const block = Cin * Cout;
  const asBlocks = reshaped(backend, filter, [taps, Cin, Cout]);
  const swapped = runWasm('Transpose', backend, { x: asBlocks }, { perm: [0, 2, 1] });
  const out = backend.makeOutput([KH, KW, Cout, Cin], 'float32');
  const heap = heapF32(backend);
  const src = offsetF32(backend, swapped);
  const dst = offsetF32(backend, out);
  for (let t = 0; t < taps; t++) {
    heap.copyWithin(dst + (taps - 1 - t) * block, src + t * block, src + (t + 1) * block);
  }
  dispose(backend, asBlocks, swapped);
  return out;
}

/**
 * dx for stride 1 is a plain convolution of dy with the spatially flipped, in/out-swapped
 * filter and the complementary padding, which XNNPACK runs directly. Other strides use
 * cols = dy · Wᵀ (GEMM) and scatter the cols back onto the input pixels (col2im).
 */
export function conv2DBackpropInput(matMul: Wrapped): KernelFunc {
  return ({ inputs, backend, attrs = {} }) => {
    const wasm = backend as BackendWasm;
    const dy = inputs['dy']!;
    const filter = inputs['filter']!;
    const c = conv2DInfoFor(attrs['inputShape'] as number[], filter.shape, attrs);
    const { filterHeight: KH, filterWidth: KW, inHeight: H, inWidth: W, outHeight: Ho, outWidth: Wo } = c;
    if (c.strideHeight === 1 && c.strideWidth === 1) {
      const top = KH - 1 - c.padInfo.top;
      const left = KW - 1 - c.padInfo.left;
      const bottom = H - Ho - top + KH - 1;
      const right = W - Wo - left + KW - 1;
      if (Math.min(top, left, bottom, right) >= 0) {
        const flipped = flippedTransposedFilter(wasm, filter);
        const dx = runWasm(
          'Conv2D',
          wasm,
          { x: dy, filter: flipped },
          {
            strides: [1, 1],
            pad: [
              [0, 0],
              [top, bottom],
              [left, right],
              [0, 0],
            ],
            dataFormat: 'NHWC',
            dilations: [1, 1],
          },
        );
        dispose(wasm, flipped);
        return dx;
      }
    }
    const { batchSize: N, outChannels: Cout, inChannels: Cin } = c;
    const K = KH * KW * Cin;
    const pixels = Ho * Wo;
    const w2 = reshaped(wasm, filter, [K, Cout]);
    const wT = transposed2D(wasm, w2); // [Cout, K]
    dispose(wasm, w2);
    const dx = wasm.makeOutput([N, H, W, Cin], 'float32');
    heapF32(wasm).fill(0, offsetF32(wasm, dx), offsetF32(wasm, dx) + N * H * W * Cin);
    const per = imagesPerChunk(N, pixels * K);
    for (let n0 = 0; n0 < N; n0 += per) {
      const count = Math.min(per, N - n0);
      const dyChunk = copyRows(wasm, dy, n0 * pixels, count * pixels, Cout);
      const cols = gemm(matMul, wasm, dyChunk, wT); // [rows, K]
      col2imAdd(heapF32(wasm), offsetF32(wasm, dx), offsetF32(wasm, cols), c, n0, count);
      dispose(wasm, dyChunk, cols);
    }
    dispose(wasm, wT);
    return dx;
  };
}
