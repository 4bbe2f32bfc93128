// Tensor-backend selection. Native TensorFlow (GPU, then CPU) is preferred; the native
// packages are optional dependencies that cannot install on machines without access to
// libtensorflow downloads, so their absence is logged and the next backend is tried.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core's node build registers no gradient functions; tfjs-layers' build registers them
// all, and every training path needs them.
import '@tensorflow/tfjs-layers';
import { registerCpuKernels } from './cpu-kernels.js';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export type BackendChoice = BackendName | 'auto';

/** What a run needs from the backend: inference only, or gradients too. */
export type BackendPurpose = 'inference' | 'training';

export interface BackendInfo {
  /** The backend the tensors run on. */
  name: BackendName;
  /** tfjs's own backend name (`tensorflow`, `wasm`, `cpu`). */
  tfjsBackend: string;
  /** Why the backends before it in the preference order were not used. */
  skipped: { name: BackendName; reason: string }[];
}

const PREFERENCE: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

type Log = (line: string) => void;

async function tryNative(pkg: string): Promise<string | undefined> {
  // TensorFlow's C++ start-up banner goes to stderr in every process; keep warnings and errors.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '1';
  // oneDNN stays on (TensorFlow's default; a ResNet step is ~1.5x faster than with Eigen). Its
  // AVX2 filter gradient of a 1x1 conv with stride 2 and few channels corrupts the heap on odd
  // batches (libtensorflow 2.15-2.21; docs/backends.md). ml/resnet.ts never builds that conv;
  // other models with strided 1x1 convs should run with TF_ENABLE_ONEDNN_OPTS=0.
  try {
    await import(pkg);
    return undefined;
  } catch (err) {
    // An optional package that is simply absent is the normal case on most machines (no GPU
    // build here): say so plainly instead of quoting the resolver's error.
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND' && e.message.includes(`'${pkg}'`)) return `${pkg} is not installed`;
    return `${pkg} not loadable: ${e.message.split('\n')[0]}`;
  }
}

/**
 * Whether the WebAssembly backend can run `purpose`. tfjs-backend-wasm ships no
 * convolution gradient kernels; `backend/wasm-kernels.ts` registers them when present.
 */
function wasmSupports(purpose: BackendPurpose): string | undefined {
  if (purpose === 'inference') return undefined;
  const missing = ['Conv2DBackpropFilter', 'Conv2DBackpropInput'].filter((k) => tf.getKernel(k, 'wasm') === undefined);
  return missing.length ? `wasm lacks gradient kernels ${missing.join(', ')}` : undefined;
}

async function activate(name: BackendName, purpose: BackendPurpose): Promise<string | undefined> {
  switch (name) {
    case 'tensorflow-gpu': {
      const why = await tryNative('@tensorflow/tfjs-node-gpu');
      if (why) return why;
      if (!(await tf.setBackend('tensorflow'))) return 'tensorflow backend failed to initialise';
      // Without CUDA/cuDNN libtensorflow only warns and runs on the CPU: don't call that a GPU.
      const gpu = (tf.backend() as { isUsingGpuDevice?: boolean }).isUsingGpuDevice;
      return gpu ? undefined : 'tfjs-node-gpu loaded but sees no GPU device (CUDA 11.2 / cuDNN 8.1 libraries missing?)';
    }
    case 'tensorflow': {
      const why = await tryNative('@tensorflow/tfjs-node');
      if (why) return why;
      return (await tf.setBackend('tensorflow')) ? undefined : 'tensorflow backend failed to initialise';
    }
    case 'wasm': {
      try {
        await import('@tensorflow/tfjs-backend-wasm');
      } catch (err) {
        return `@tensorflow/tfjs-backend-wasm not loadable: ${(err as Error).message}`;
      }
      const { registerWasmKernels } = await import('./wasm-kernels.js');
      registerWasmKernels();
      const lacking = wasmSupports(purpose);
      if (lacking) return lacking;
      return (await tf.setBackend('wasm')) ? undefined : 'wasm backend failed to initialise';
    }
    case 'cpu':
      // The stock filter-gradient kernel is ~60x too slow to train a ResNet (backend/cpu-kernels.ts).
      registerCpuKernels();
      return (await tf.setBackend('cpu')) ? undefined : 'cpu backend failed to initialise';
  }
}

/**
 * Selects and activates the tensor backend. `auto` walks the preference order and takes the
 * first one that loads and supports `purpose`; a named backend must work or this throws.
 */
export async function selectBackend(
  choice: BackendChoice = 'auto',
  purpose: BackendPurpose = 'training',
  log: Log = (line) => console.error(line),
): Promise<BackendInfo> {
  const candidates = choice === 'auto' ? PREFERENCE : [choice];
  const skipped: BackendInfo['skipped'] = [];
  for (const name of candidates) {
    const reason = await activate(name, purpose);
    if (reason === undefined) {
      await tf.ready();
      if (skipped.length) log(`backend: using ${name}; not used: ${skipped.map((s) => `${s.name} (${s.reason})`).join('; ')}`);
      active = { name, tfjsBackend: tf.getBackend(), skipped };
      return active;
    }
    skipped.push({ name, reason });
  }
  throw new Error(`no usable tensor backend for ${purpose}: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

let active: BackendInfo | undefined;

/** The backend chosen by the last `selectBackend`, or tfjs's default (plain JS) before any. */
export function currentBackend(): BackendName {
  return active?.name ?? 'cpu';
}
