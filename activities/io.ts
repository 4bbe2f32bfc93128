// File formats of the stage artifacts that ml/ and data/ do not already define: matrices
// (features, density) as raw little-endian float32 with a JSON header, and JSON that keeps
// NaN and +-Infinity (detection statistics use them; plain JSON would turn them into null).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { matrix, type Matrix } from '../ml/matrix.js';

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
