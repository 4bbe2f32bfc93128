// File formats of the stage artifacts that ml/ and data/ do not already define: matrices
// (features, density) as raw little-endian float32 with a JSON header, and JSON that keeps
// NaN and +-Infinity (detection statistics use them; plain JSON would turn them into null).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FlowCheckpoint } from '../ml/flow.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { writeFileAtomic } from '../data/files.js';

export async function writeMatrix(dir: string, name: string, m: Matrix): Promise<void> {
  await writeFile(join(dir, `${name}.json`), JSON.stringify({ rows: m.rows, cols: m.cols, dtype: 'float32', endian: 'little' }) + '\n');
  const bytes = new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  await writeFile(join(dir, `${name}.f32`), bytes);
}

export async function readMatrix(dir: string, name: string): Promise<Matrix> {
  const headerFile = join(dir, `${name}.json`);
  const header = JSON.parse(await readFile(headerFile, 'utf8')) as { rows: number; cols: number; dtype: string };
  if (header.dtype !== 'float32' || !Number.isInteger(header.rows) || !Number.isInteger(header.cols)) {
    throw new Error(`${headerFile}: not a float32 matrix header`);
  }
  const buf = await readFile(join(dir, `${name}.f32`));
  if (buf.byteLength !== header.rows * header.cols * 4) {
    throw new Error(`${join(dir, `${name}.f32`)}: ${buf.byteLength} bytes, expected ${header.rows}x${header.cols} float32`);
  }
  // Copy into an aligned buffer: Buffer slices of the pool may start at odd offsets.
  const data = new Float32Array(header.rows * header.cols);
  new Uint8Array(data.buffer).set(buf);
  return matrix(header.rows, header.cols, data);
}

const NON_FINITE: Record<string, number> = { NaN: Number.NaN, Infinity: Number.POSITIVE_INFINITY, '-Infinity': Number.NEGATIVE_INFINITY };

/** JSON in which non-finite numbers survive as the strings "NaN", "Infinity", "-Infinity". */
export async function writeJson(file: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 1);
  await writeFile(file, text + '\n');
}

/** Reads writeJson's output; `numericKeys` names the fields whose string values are non-finite numbers. */
export async function readJson<T>(file: string, numericKeys: readonly string[] = []): Promise<T> {
  const keys = new Set(numericKeys);
  return JSON.parse(await readFile(file, 'utf8'), (k, v: unknown) =>
    keys.has(k) && typeof v === 'string' && v in NON_FINITE ? NON_FINITE[v] : v,
  ) as T;
}

// ---- flow checkpoints (ml/flow.ts gives the snapshot; the file format lives here) ----

interface FlowCheckpointFile {
  format: 'backdoor-audit/flow-checkpoint@1';
  epoch: number;
  rngState: number;
  nll: number[];
  flow: { dim: number; hidden: number; weights: Record<string, string> };
  optimizer: { name: string; shape: number[]; data: string }[];
}

const b64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
function f32(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  const out = new Float32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

/** Writes a flow training checkpoint atomically (temp file + rename). */
export async function saveFlowCheckpoint(file: string, c: FlowCheckpoint): Promise<void> {
  const body: FlowCheckpointFile = {
    format: 'backdoor-audit/flow-checkpoint@1',
    epoch: c.epoch,
    rngState: c.rngState,
    nll: c.nll,
    flow: {
      dim: c.flow.dim,
      hidden: c.flow.hidden,
      weights: Object.fromEntries(Object.entries(c.flow.weights).map(([k, v]) => [k, b64(v)])),
    },
    optimizer: c.optimizer.map((o) => ({ name: o.name, shape: o.shape, data: b64(o.data) })),
  };
  await writeFileAtomic(file, JSON.stringify(body));
}

/** The checkpoint in `file`, or undefined when there is none or it is unreadable (then training starts over). */
export async function loadFlowCheckpoint(file: string): Promise<FlowCheckpoint | undefined> {
  let body: FlowCheckpointFile;
  try {
    body = JSON.parse(await readFile(file, 'utf8')) as FlowCheckpointFile;
  } catch {
    return undefined;
  }
  if (body.format !== 'backdoor-audit/flow-checkpoint@1') return undefined;
  return {
    epoch: body.epoch,
    rngState: body.rngState,
    nll: body.nll,
    flow: {
      dim: body.flow.dim,
      hidden: body.flow.hidden,
      weights: Object.fromEntries(Object.entries(body.flow.weights).map(([k, v]) => [k, f32(v)])),
    },
    optimizer: body.optimizer.map((o) => ({ name: o.name, shape: o.shape, data: f32(o.data) })),
  };
}
