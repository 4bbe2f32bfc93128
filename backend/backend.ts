// Tensor-backend selection. Native TensorFlow (GPU, then CPU) is preferred; the native
// packages are optional dependencies that cannot install on machines without access to
// libtensorflow downloads, so their absence is logged and the next backend is tried.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core's node build registers no gradient functions; tfjs-layers' build registers them
// all, and every training path needs them.
import '@tensorflow/tfjs-layers';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { registerCpuKernels } from './cpu-kernels.js';
import { registerNativeKernels } from './native-kernels.js';

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
  /** What the tensors run on, in words (`currentDevice`): recorded by the computing stages and report.json. */
  device: string;
}

const PREFERENCE: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

type Log = (line: string) => void;

const CPU_PKG = '@tensorflow/tfjs-node';
const GPU_PKG = '@tensorflow/tfjs-node-gpu';

/** The native package whose 'tensorflow' backend is registered in this process, if any. */
let nativePkg: string | undefined;

/** The registered 'tensorflow' backend, as tfjs-node's NodeJSKernelBackend exposes it. */
interface NativeBackend {
  isGPUPackage?: boolean;
  isUsingGpuDevice?: boolean;
  binding?: { TF_Version?: string };
}

/**
 * Makes `pkg`'s 'tensorflow' backend available: undefined if it is, else why not. Both packages
 * register the same backend name and kernels (and their libtensorflow builds share sonames), so
 * only one may load per process: a second import would re-register every kernel.
 */
async function loadNative(pkg: string): Promise<string | undefined> {
  if (nativePkg === undefined && tf.findBackendFactory('tensorflow') != null) {
    // Registered by a direct import elsewhere (a test importing tfjs-node, say): find out which.
    if (await tf.setBackend('tensorflow')) nativePkg = (tf.backend() as NativeBackend).isGPUPackage ? GPU_PKG : CPU_PKG;
  }
  if (nativePkg === undefined) {
    const why = await tryNative(pkg);
    if (why !== undefined) return why;
    nativePkg = pkg;
  }
  if (nativePkg !== pkg) return `${nativePkg} is already loaded in this process (one native TensorFlow per process)`;
  // However it got loaded (here, or by a direct import elsewhere): the fused kernels
  // (backend/native-kernels.ts: batch norm, ReLU's gradient) go with it.
  registerNativeKernels();
  return undefined;
}

/** libtensorflow's version as the loaded addon reports it (e.g. `2.18.1`). */
function nativeVersion(): string {
  return (tf.backend() as NativeBackend).binding?.TF_Version ?? 'unknown version';
}

/** The GPUs nvidia-smi lists (`name, compute capability x.y, memory, driver`), or undefined. */
function nvidiaSmiGpus(): string[] | undefined {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,compute_cap,memory.total,driver_version', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const gpus = out
      .split('\n')
      .map((l) => l.split(',').map((f) => f.trim()))
      .filter((f) => f.length === 4 && f[0])
      .map(([name, cc, mem, driver]) => `${name} (compute capability ${cc}, ${mem}, driver ${driver})`);
    return gpus.length ? gpus : undefined;
  } catch {
    return undefined;
  }
}

/** Why a loaded GPU build registered no GPU device, in plain words. */
function noGpuReason(): string {
  const gpus = nvidiaSmiGpus();
  if (gpus === undefined && !existsSync('/proc/driver/nvidia/version')) {
    return 'found no GPU: no NVIDIA driver on this machine (no /proc/driver/nvidia/version, no nvidia-smi)';
  }
  return (
    `found no GPU device although ${gpus ? `nvidia-smi lists ${gpus.join('; ')}` : 'an NVIDIA driver is loaded'} ` +
    '(TensorFlow could not use it: its CUDA libraries missing or the driver too old? `npm run setup -- --gpu` ' +
    "reinstalls them; TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's own reasons)"
  );
}

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
    // A copy without its addon registers its kernels and then throws: take them back, so that
    // the other package (or a later attempt) registers into a clean registry, without warnings.
    if (tf.findBackendFactory('tensorflow') == null) {
      for (const k of tf.getKernelsForBackend('tensorflow')) tf.unregisterKernel(k.kernelName, 'tensorflow');
    }
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
      const why = await loadNative(GPU_PKG);
      if (why) return why;
      if (!(await tf.setBackend('tensorflow'))) return 'tensorflow backend failed to initialise';
      // Without a GPU (or its CUDA libraries) libtensorflow only logs and runs on the CPU: don't
      // call that a GPU. 'tensorflow' next reuses this build on the CPU.
      if (!(tf.backend() as NativeBackend).isUsingGpuDevice) {
        return `the GPU build (${GPU_PKG}, libtensorflow ${nativeVersion()}) loaded but ${noGpuReason()}; TensorFlow runs on the CPU`;
      }
      const gpus = nvidiaSmiGpus();
      device = `GPU: ${gpus ? gpus.join('; ') : "a CUDA device (no nvidia-smi for its name; TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's 'Created device' line)"}; libtensorflow ${nativeVersion()}`;
      return undefined;
    }
    case 'tensorflow': {
      // The GPU build, loaded above but without a GPU, serves as the CPU backend: loading the CPU
      // package as well would register every kernel twice.
      const why = await loadNative(nativePkg === GPU_PKG ? GPU_PKG : CPU_PKG);
      if (why) return why;
      if (!(await tf.setBackend('tensorflow'))) return 'tensorflow backend failed to initialise';
      const { isUsingGpuDevice } = tf.backend() as NativeBackend;
      device = `${isUsingGpuDevice ? 'GPU' : 'CPU'}: libtensorflow ${nativeVersion()} (${nativePkg})`;
      return undefined;
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
      if (!(await tf.setBackend('wasm'))) return 'wasm backend failed to initialise';
      device = 'CPU: WebAssembly (@tensorflow/tfjs-backend-wasm)';
      return undefined;
    }
    case 'cpu':
      // The stock filter-gradient kernel is ~60x too slow to train a ResNet (backend/cpu-kernels.ts).
      registerCpuKernels();
      if (!(await tf.setBackend('cpu'))) return 'cpu backend failed to initialise';
      device = 'CPU: plain JavaScript (@tensorflow/tfjs-backend-cpu)';
      return undefined;
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
    device = undefined;
    const reason = await activate(name, purpose);
    if (reason === undefined) {
      await tf.ready();
      if (skipped.length) log(`backend: using ${name}; not used: ${skipped.map((s) => `${s.name} (${s.reason})`).join('; ')}`);
      // The GPU is worth a line of its own, with or without skipped backends before it.
      if (name === 'tensorflow-gpu') log(`backend: tensorflow-gpu runs on ${device}`);
      activeDevice = device ?? name;
      active = { name, tfjsBackend: tf.getBackend(), skipped, device: activeDevice };
      return active;
    }
    skipped.push({ name, reason });
  }
  throw new Error(`no usable tensor backend for ${purpose}: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

let active: BackendInfo | undefined;
/** Set by `activate` for the native backends; see `currentDevice`. */
let device: string | undefined;
let activeDevice: string | undefined;

/** The backend chosen by the last `selectBackend`, or tfjs's default (plain JS) before any. */
export function currentBackend(): BackendName {
  return active?.name ?? 'cpu';
}

/**
 * What the backend chosen by the last `selectBackend` runs on: `GPU: <name> (compute capability
 * x.y, memory, driver); libtensorflow <version>`, `CPU: libtensorflow <version> (<package>)`,
 * `CPU: WebAssembly (...)` or `CPU: plain JavaScript (...)`; undefined before any.
 */
export function currentDevice(): string | undefined {
  return activeDevice;
}
