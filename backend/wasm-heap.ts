// The plumbing of the wasm training kernels (backend/wasm-kernels.ts): replacing or adding a
// kernel on the wasm backend while keeping the original callable, running other wasm kernels,
// and reading and writing tensors in place on the wasm heap.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

const WASM = 'wasm';

/** A wasm kernel together with the setup it needs; setup normally runs at backend start. */
export interface Wrapped {
  call: (backend: BackendWasm, inputs: NamedTensorInfoMap, attrs: NamedAttrMap) => TensorInfo;
}

export function wrapOriginal(config: KernelConfig): Wrapped {
  // A replaced kernel's setupFunc (which binds its wasm export) is no longer called by the
  // engine when the backend starts, so it is called here once per backend instance.
  const readyFor = new WeakSet<object>();
  return {
    call(backend, inputs, attrs) {
      if (config.setupFunc && !readyFor.has(backend)) {
        config.setupFunc(backend);
        readyFor.add(backend);
      }
      return config.kernelFunc({ inputs, backend, attrs }) as TensorInfo;
    },
  };
}

export function replaceKernel(name: string, make: (orig: Wrapped) => KernelFunc): Wrapped {
  const config = tf.getKernel(name, WASM);
  if (config === undefined) throw new Error(`wasm-kernels: tfjs-backend-wasm has no ${name} kernel to wrap`);
  const orig = wrapOriginal(config);
  tf.unregisterKernel(name, WASM);
  tf.registerKernel({ kernelName: name, backendName: WASM, kernelFunc: make(orig) });
  return orig;
}

export function addKernel(name: string, kernelFunc: KernelFunc): void {
  if (tf.getKernel(name, WASM) !== undefined) return; // a newer tfjs-backend-wasm has its own
  tf.registerKernel({ kernelName: name, backendName: WASM, kernelFunc });
}

/** Runs another registered wasm kernel (the current registration, wrapped or not). */
export function runWasm(name: string, backend: BackendWasm, inputs: NamedTensorInfoMap, attrs: NamedAttrMap = {}): TensorInfo {
  const config = tf.getKernel(name, WASM);
  if (config === undefined) throw new Error(`wasm-kernels: kernel ${name} missing on wasm`);
  return config.kernelFunc({ inputs, backend, attrs }) as TensorInfo;
}

export function dispose(backend: BackendWasm, ...infos: TensorInfo[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

/** A float32 view of the whole wasm heap. Re-take after every allocation: growth detaches it. */
export function heapF32(backend: BackendWasm): Float32Array {
  return new Float32Array((backend.wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.buffer);
}

/** Index of a tensor's first float in `heapF32`. */
export function offsetF32(backend: BackendWasm, info: TensorInfo): number {
  return backend.dataIdMap.get(info.dataId)!.memoryOffset / 4;
}

export function reshaped(backend: BackendWasm, info: TensorInfo, shape: number[]): TensorInfo {
  return runWasm('Reshape', backend, { x: info }, { shape });
}

export function transposed2D(backend: BackendWasm, info: TensorInfo): TensorInfo {
  return runWasm('Transpose', backend, { x: info }, { perm: [1, 0] });
}

/** A float32 tensor holding a copy of `rows` rows of width `width` of `src`, from row `from`. */
export function copyRows(backend: BackendWasm, src: TensorInfo, from: number, rows: number, width: number): TensorInfo {
  const out = backend.makeOutput([rows, width], 'float32');
  const heap = heapF32(backend);
  const s = offsetF32(backend, src) + from * width;
  heap.copyWithin(offsetF32(backend, out), s, s + rows * width);
  return out;
}

/** C[M,N] = A[M,K] · B[K,N] through the original XNNPACK path (neither operand transposed). */
export function gemm(orig: Wrapped, backend: BackendWasm, a: TensorInfo, b: TensorInfo): TensorInfo {
  return orig.call(backend, { a, b }, { transposeA: false, transposeB: false });
}
