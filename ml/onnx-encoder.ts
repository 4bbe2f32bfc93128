// A frozen encoder exported from PyTorch to ONNX (how self-supervised checkpoints usually leave
// PyTorch), run with ONNX Runtime for Node: the paper's Table 3 alternative to SimCLR for models
// that never were tfjs. The preprocessing is torchvision's: resize (bilinear, align_corners=False),
// ToTensor (pixel / 255), Normalize(mean, std), channels first. The model's output is flattened
// to [N, D] features.
import { readFile } from 'node:fs/promises';
import { sha256Hex } from '../data/hash.js';
import type { OnnxEncoderConfig } from './config.js';
import type { BatchEncoder } from './features.js';

// The few parts of onnxruntime-node used here, typed locally: it is an optional dependency, so
// the project type-checks where it did not install (the encoder then says it is missing).
interface OrtTensor {
  readonly dims: readonly number[];
  readonly type: string;
  readonly data: unknown;
}
interface OrtValueMetadata {
  readonly name: string;
  readonly isTensor: boolean;
  readonly type?: string;
  readonly shape?: readonly (number | string)[];
}
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly OrtValueMetadata[];
  run(feeds: Record<string, OrtTensor>, fetches: readonly string[]): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface Ort {
  InferenceSession: {
    create(model: Uint8Array, options: { executionProviders: string[]; logSeverityLevel?: 0 | 1 | 2 | 3 | 4 }): Promise<OrtSession>;
  };
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
}

const ORT_PACKAGE = 'onnxruntime-node';

async function loadOrt(): Promise<Ort> {
  try {
    const mod = (await import(ORT_PACKAGE)) as Ort & { default?: Ort };
    // CommonJS package: its exports arrive on `default` or as named exports, depending on the loader.
    return mod.InferenceSession ? mod : (mod.default as Ort);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND')
      throw new Error(`onnx encoder: ${ORT_PACKAGE} is not installed (an optional dependency: npm install ${ORT_PACKAGE})`);
    throw new Error(`onnx encoder: ${ORT_PACKAGE} cannot be loaded: ${e.message.split('\n')[0]}`);
  }
}

/** An ONNX encoder ready to run, and what it ran on. */
export interface OnnxEncoder extends BatchEncoder {
  /** 'onnxruntime cpu' or 'onnxruntime cuda'. */
  readonly provider: string;
  /** Why CUDA was asked for and not used (the encoder runs on CPU), if so. */
  readonly fallback?: string;
}

/**
 * Opens `config.path` with ONNX Runtime. `expectSha256`: the model file must still be the one
 * the encoder artifact was made from (its hash is in the cache key). With `provider: cuda` and
 * no loadable CUDA provider it runs on CPU and says why in `fallback`.
 */
export async function loadOnnxEncoder(config: OnnxEncoderConfig, expectSha256?: string): Promise<OnnxEncoder> {
  const what = `onnx encoder ${config.path}`;
  const bytes = await readFile(config.path).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`${what}: cannot read the model: ${err.code ?? err.message}`);
  });
  if (expectSha256 !== undefined && sha256Hex(bytes) !== expectSha256)
    throw new Error(`${what}: the model file changed since this encoder artifact was made (sha256 differs); run the audit again`);
  const ort = await loadOrt();
  let session: OrtSession;
  let fallback: string | undefined;
  // Trying CUDA logs its own error on stderr when the provider is missing; the fallback says it once.
  const create = (providers: string[]) =>
    ort.InferenceSession.create(bytes, {
      executionProviders: providers,
      ...(providers[0] === 'cuda' ? { logSeverityLevel: 4 } : {}),
    }).catch((err: Error) => {
      throw new Error(`${what}: ${err.message.split('\n')[0]}`);
    });
  if (config.provider === 'cuda') {
    try {
      session = await create(['cuda', 'cpu']);
    } catch (err) {
      // The CUDA provider's libraries are not in the npm package (docs: README, ONNX encoders).
      fallback = `CUDA execution provider not available (${(err as Error).message.slice(0, 300)}); running on CPU`;
      session = await create(['cpu']);
    }
  } else {
    session = await create(['cpu']);
  }
  try {
    return openedEncoder(ort, session, config, fallback);
  } catch (err) {
    await session.release();
    throw err;
  }
}

function openedEncoder(ort: Ort, session: OrtSession, config: OnnxEncoderConfig, fallback: string | undefined): OnnxEncoder {
  const what = `onnx encoder ${config.path}`;
  const layout = config.layout;
  const S = config.inputSize;
  if (session.inputNames.length !== 1)
    throw new Error(
      `${what}: the model must take one input (images), it takes ${session.inputNames.length}: ${session.inputNames.join(', ')}`,
    );
  const input = session.inputNames[0];
  const output = config.output ?? session.outputNames[0];
  if (!session.outputNames.includes(output))
    throw new Error(`${what}: no output named '${output}'; the model's outputs are ${session.outputNames.join(', ')}`);
  // Static dimensions, where the export fixed them, are checked now rather than at the first batch.
  const meta = session.inputMetadata.find((m) => m.name === input);
  const shape = meta?.isTensor ? meta.shape : undefined;
  const want = layout === 'nchw' ? [undefined, 3, S, S] : [undefined, S, S, 3];
  if (shape && (shape.length !== 4 || want.some((d, i) => d !== undefined && typeof shape[i] === 'number' && shape[i] !== d)))
    throw new Error(
      `${what}: input '${input}' is [${shape.join(', ')}]; with layout ${layout} and inputSize ${S} it must be [N, ${want.slice(1).join(', ')}]`,
    );
  if (meta?.type !== undefined && meta.type !== 'float32') throw new Error(`${what}: input '${input}' is ${meta.type}, not float32`);
  // An export without dynamic_axes fixes the batch: feed it that many images at a time.
  const fixedBatch = shape && typeof shape[0] === 'number' && shape[0] > 0 ? shape[0] : undefined;
  return {
    name: what,
    provider: `onnxruntime ${fallback || config.provider !== 'cuda' ? 'cpu' : 'cuda'}`,
    ...(fallback ? { fallback } : {}),
    ...(fixedBatch ? { fixedBatch } : {}),
    async encodeBatch(pixels, n, height, width) {
      const x = onnxInput(pixels, n, height, width, config);
      const dims = layout === 'nchw' ? [n, 3, S, S] : [n, S, S, 3];
      const result = await session.run({ [input]: new ort.Tensor('float32', x, dims) }, [output]);
      const y = result[output];
      if (y.type !== 'float32' || !(y.data instanceof Float32Array))
        throw new Error(`${what}: output '${output}' is ${y.type}, expected float32 features`);
      if (y.dims[0] !== n) throw new Error(`${what}: output '${output}' is [${y.dims.join(', ')}] for a batch of ${n} images`);
      const cols = y.dims.slice(1).reduce((a, b) => a * b, 1);
      return { rows: y.data, cols };
    },
    dispose: () => session.release(),
  };
}

/**
 * The model's input for `n` uint8 HWC images of height x width: resized to inputSize (bilinear,
 * half-pixel centres: PyTorch's align_corners=False), (pixel / 255 - mean[c]) / std[c], float32
 * in `layout` (NCHW by default).
 */
export function onnxInput(
  pixels: Uint8Array,
  n: number,
  height: number,
  width: number,
  config: Pick<OnnxEncoderConfig, 'inputSize' | 'mean' | 'std' | 'layout'>,
): Float32Array {
  if (pixels.length !== n * height * width * 3)
    throw new Error(`onnxInput: ${pixels.length} bytes for ${n} images of ${height}x${width}x3`);
  const S = config.inputSize;
  const nchw = config.layout === 'nchw';
  const ys = sampleGrid(height, S);
  const xs = sampleGrid(width, S);
  // Per channel: value = pixel * scale + shift, i.e. (pixel / 255 - mean) / std.
  const scale = config.std.map((s) => 1 / (255 * s));
  const shift = config.mean.map((m, c) => -m / config.std[c]);
  const out = new Float32Array(n * 3 * S * S);
  for (let i = 0; i < n; i++) {
    const img = i * height * width * 3;
    for (let oy = 0; oy < S; oy++) {
      const { i0: y0, i1: y1, t: ty } = ys[oy];
      for (let ox = 0; ox < S; ox++) {
        const { i0: x0, i1: x1, t: tx } = xs[ox];
        const p00 = img + (y0 * width + x0) * 3;
        const p01 = img + (y0 * width + x1) * 3;
        const p10 = img + (y1 * width + x0) * 3;
        const p11 = img + (y1 * width + x1) * 3;
        for (let c = 0; c < 3; c++) {
          const top = pixels[p00 + c] + (pixels[p01 + c] - pixels[p00 + c]) * tx;
          const bottom = pixels[p10 + c] + (pixels[p11 + c] - pixels[p10 + c]) * tx;
          const v = (top + (bottom - top) * ty) * scale[c] + shift[c];
          out[nchw ? ((i * 3 + c) * S + oy) * S + ox : ((i * S + oy) * S + ox) * 3 + c] = v;
        }
      }
    }
  }
  return out;
}

/** Source positions of `size` output pixels along an axis of `from` pixels (align_corners=False). */
function sampleGrid(from: number, size: number): { i0: number; i1: number; t: number }[] {
  const ratio = from / size;
  return Array.from({ length: size }, (_, o) => {
    const src = Math.max(0, (o + 0.5) * ratio - 0.5);
    const i0 = Math.min(Math.floor(src), from - 1);
    return { i0, i1: Math.min(i0 + 1, from - 1), t: src - i0 };
  });
}
