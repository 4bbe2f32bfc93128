// Content hashing shared by ingest (dataset hash), the artifact store (file manifests) and the
// stage cache keys. One place, so that every hash in the project means the same thing.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** sha256 of bytes or a UTF-8 string, lower-case hex. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of a file, streamed so that large shards and checkpoints never sit in memory. */
export async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    hash.update(buf);
    bytes += buf.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/**
 * JSON with object keys sorted at every level and no whitespace, so that equal values give
 * equal text whatever order their keys were written in. Rejects what plain JSON would
 * silently drop or mangle (undefined, functions, NaN/Infinity, Map/Set/typed arrays...),
 * because a cache key built from a lossy encoding would reuse results for different inputs.
 */
export function canonicalJson(value: unknown): string {
  return encode(value, '$');
}

function encode(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) {
        throw new TypeError(`canonicalJson: ${String(value)} at ${path} has no JSON form`);
      }
      // JS number-to-string is the shortest round-trip form, identical on every engine; -0 -> 0.
      return JSON.stringify(value);
    case 'undefined':
      throw new TypeError(`canonicalJson: undefined at ${path}; omit the key or use null`);
    case 'function':
    case 'symbol':
    case 'bigint':
      throw new TypeError(`canonicalJson: a ${typeof value} at ${path} has no JSON form`);
  }
  if (Array.isArray(value)) {
    return `[${value.map((v, i) => encode(v, `${path}[${i}]`)).join(',')}]`;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) {
    const kind = (value as object).constructor?.name ?? 'object';
    throw new TypeError(`canonicalJson: a ${kind} at ${path} is not a plain object; convert it to an object or array`);
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${encode(obj[k], `${path}.${k}`)}`).join(',')}}`;
}
