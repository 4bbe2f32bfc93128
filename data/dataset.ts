// An ingested dataset folder: its layout, opening it, and reading its pixels by index; and a
// dataset held in memory. data/ingest.ts writes these folders.
//
// Layout of an ingested dataset folder:
//   shard-00000.u8 ...   raw pixels, `count` samples of height*width*3 bytes each, in sample order
//   samples.jsonl        one {"id","label","sha256"} line per sample, in sample order
//   dataset.json         the DatasetManifest, written last (its presence marks a complete folder)
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DatasetError } from './dataset-error.js';
import { sha256File, sha256Hex } from './hash.js';
import type { ImageSource } from './types.js';

export interface DatasetManifest {
  name: string;
  format: string;
  classes: string[];
  height: number;
  width: number;
  size: number;
  /** sha256 over the decode pipeline, classes, image size and the sorted (id, label, content hash) of every sample. */
  hash: string;
  shards: { file: string; count: number; sha256: string }[];
  /** The per-sample index file (ids, labels, content hashes). */
  index: { file: string; sha256: string };
}

export const MANIFEST_FILE = 'dataset.json';
export const INDEX_FILE = 'samples.jsonl';
/** Open shard handles kept by a ShardedDataset. */
const MAX_OPEN_SHARDS = 8;

export interface SampleEntry {
  id: string;
  label: number;
  /** Content hash: of the source file, the CIFAR record, or the pixels (writeDataset). */
  sha256: string;
}

/** Opens an ingested dataset folder; checks the manifest, index and shard sizes (not shard hashes: see verify()). */
export async function openDataset(dir: string): Promise<ShardedDataset> {
  const root = resolve(dir);
  const manifestPath = join(root, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch {
    throw new DatasetError(manifestPath, 'dataset manifest not found; is this an ingested dataset folder?');
  }
  const manifest = parseManifest(manifestPath, text);
  const indexPath = join(root, manifest.index.file);
  let indexBytes: Buffer;
  try {
    indexBytes = await readFile(indexPath);
  } catch {
    throw new DatasetError(indexPath, 'sample index file missing');
  }
  if (sha256Hex(indexBytes) !== manifest.index.sha256)
    throw new DatasetError(indexPath, 'sample index does not match its sha256 in dataset.json (corrupted)');
  const lines = indexBytes
    .toString('utf8')
    .split('\n')
    .filter((l) => l !== '');
  if (lines.length !== manifest.size) throw new DatasetError(indexPath, `has ${lines.length} samples, manifest says ${manifest.size}`);
  const ids: string[] = new Array<string>(lines.length);
  const hashes: string[] = new Array<string>(lines.length);
  const labels = new Int32Array(lines.length);
  for (let i = 0; i < lines.length; i++) {
    const e = JSON.parse(lines[i]!) as SampleEntry;
    if (typeof e.id !== 'string' || !Number.isInteger(e.label) || e.label < 0 || e.label >= manifest.classes.length) {
      throw new DatasetError(indexPath, `line ${i + 1}: invalid sample entry`);
    }
    ids[i] = e.id;
    labels[i] = e.label;
    hashes[i] = e.sha256;
  }
  const sampleBytes = manifest.height * manifest.width * 3;
  let total = 0;
  for (const shard of manifest.shards) {
    const path = join(root, shard.file);
    let bytes: number;
    try {
      bytes = (await stat(path)).size;
    } catch {
      throw new DatasetError(path, 'shard file missing');
    }
    if (bytes !== shard.count * sampleBytes) {
      throw new DatasetError(
        path,
        `shard is ${bytes} bytes, expected ${shard.count * sampleBytes} (${shard.count} images of ${manifest.height}x${manifest.width}x3)`,
      );
    }
    total += shard.count;
  }
  if (total !== manifest.size) throw new DatasetError(manifestPath, `shards hold ${total} samples, manifest says ${manifest.size}`);
  return new ShardedDataset(root, manifest, ids, labels, hashes);
}

/** An ingested dataset on disk: labels and ids in memory, pixels read by offset on demand. */
export class ShardedDataset implements ImageSource {
  readonly manifest: DatasetManifest;
  readonly classes: readonly string[];
  readonly height: number;
  readonly width: number;
  readonly size: number;
  readonly labels: Int32Array;
  readonly ids: readonly string[];
  /** Content hash of every sample's source (file bytes, CIFAR record, or pixels). */
  readonly contentHashes: readonly string[];
  readonly dir: string;
  private readonly sampleBytes: number;
  /** Index of the first sample of each shard, plus size at the end. */
  private readonly shardStarts: number[];
  /** Open handles in least-recently-used order (Map keeps insertion order). */
  private readonly handles = new Map<number, { fh: Promise<FileHandle>; pins: number }>();

  constructor(dir: string, manifest: DatasetManifest, ids: string[], labels: Int32Array, contentHashes: string[]) {
    this.dir = dir;
    this.manifest = manifest;
    this.classes = manifest.classes;
    this.height = manifest.height;
    this.width = manifest.width;
    this.size = manifest.size;
    this.ids = ids;
    this.labels = labels;
    this.contentHashes = contentHashes;
    this.sampleBytes = manifest.height * manifest.width * 3;
    this.shardStarts = [0];
    for (const s of manifest.shards) this.shardStarts.push(this.shardStarts[this.shardStarts.length - 1]! + s.count);
  }

  async readImages(indices: ArrayLike<number>): Promise<Uint8Array> {
    const sb = this.sampleBytes;
    const out = new Uint8Array(indices.length * sb);
    // Consecutive indices in the same shard become one read.
    const reads: { shard: number; position: number; outOffset: number; length: number }[] = [];
    for (let k = 0; k < indices.length; k++) {
      const idx = indices[k]!;
      if (!Number.isInteger(idx) || idx < 0 || idx >= this.size) throw new RangeError(`sample index ${idx} outside 0..${this.size - 1}`);
      const shard = this.shardOf(idx);
      const position = (idx - this.shardStarts[shard]!) * sb;
      const last = reads[reads.length - 1];
      if (last && last.shard === shard && last.position + last.length === position && last.outOffset + last.length === k * sb) {
        last.length += sb;
      } else {
        reads.push({ shard, position, outOffset: k * sb, length: sb });
      }
    }
    const shards = [...new Set(reads.map((r) => r.shard))];
    const pinned: number[] = [];
    try {
      const fhs = new Map<number, FileHandle>();
      for (const s of shards) {
        fhs.set(s, await this.acquire(s));
        pinned.push(s);
      }
      await Promise.all(reads.map((r) => readFully(fhs.get(r.shard)!, out, r.outOffset, r.length, r.position, this.shardPath(r.shard))));
    } finally {
      for (const s of pinned) this.release(s);
    }
    return out;
  }

  /** Re-hashes every shard against the manifest; throws a DatasetError naming the first bad shard. */
  async verify(): Promise<void> {
    for (let s = 0; s < this.manifest.shards.length; s++) {
      const { sha256 } = await sha256File(this.shardPath(s));
      if (sha256 !== this.manifest.shards[s]!.sha256)
        throw new DatasetError(this.shardPath(s), 'shard content does not match its sha256 in dataset.json (corrupted)');
    }
  }

  /** Closes open shard files; call when no read is in flight. Later reads reopen them. */
  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h.fh.catch(() => undefined))?.close()));
  }

  private shardPath(shard: number): string {
    return join(this.dir, this.manifest.shards[shard]!.file);
  }

  private shardOf(idx: number): number {
    let lo = 0;
    let hi = this.shardStarts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.shardStarts[mid]! <= idx) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private async acquire(shard: number): Promise<FileHandle> {
    let h = this.handles.get(shard);
    if (h) {
      this.handles.delete(shard); // re-insert: most recently used
    } else {
      const path = this.shardPath(shard);
      h = {
        fh: open(path, 'r').catch((err: Error) => {
          throw new DatasetError(path, `cannot open shard: ${err.message}`);
        }),
        pins: 0,
      };
      h.fh.catch(() => undefined);
    }
    this.handles.set(shard, h);
    h.pins++;
    this.evict();
    try {
      return await h.fh;
    } catch (err) {
      h.pins--;
      if (this.handles.get(shard) === h) this.handles.delete(shard);
      throw err;
    }
  }

  private release(shard: number): void {
    const h = this.handles.get(shard);
    if (h) h.pins--;
    this.evict();
  }

  /** Closes least recently used handles beyond the limit; a handle in use by a read is kept. */
  private evict(): void {
    for (const [s, h] of this.handles) {
      if (this.handles.size <= MAX_OPEN_SHARDS) break;
      if (h.pins > 0) continue;
      this.handles.delete(s);
      void h.fh.then((fh) => fh.close()).catch(() => undefined);
    }
  }
}

/** A dataset held in memory (tests, small generated sets, poisoned copies before saving). */
export class InMemoryImages implements ImageSource {
  readonly classes: readonly string[];
  readonly height: number;
  readonly width: number;
  readonly size: number;
  readonly labels: Int32Array;
  readonly ids: readonly string[];
  private readonly pixels: Uint8Array;

  constructor(init: {
    classes: readonly string[];
    height: number;
    width: number;
    labels: Int32Array;
    ids: readonly string[];
    pixels: Uint8Array;
  }) {
    const n = init.labels.length;
    if (init.ids.length !== n) throw new Error(`InMemoryImages: ${n} labels but ${init.ids.length} ids`);
    if (init.pixels.length !== n * init.height * init.width * 3) {
      throw new Error(`InMemoryImages: pixels has ${init.pixels.length} bytes, expected ${n}x${init.height}x${init.width}x3`);
    }
    for (let i = 0; i < n; i++) {
      if (init.labels[i]! < 0 || init.labels[i]! >= init.classes.length)
        throw new Error(`InMemoryImages: label ${init.labels[i]} of ${init.ids[i]} outside ${init.classes.length} classes`);
    }
    this.classes = init.classes;
    this.height = init.height;
    this.width = init.width;
    this.size = n;
    this.labels = init.labels;
    this.ids = init.ids;
    this.pixels = init.pixels;
  }

  async readImages(indices: ArrayLike<number>): Promise<Uint8Array> {
    const sb = this.height * this.width * 3;
    const out = new Uint8Array(indices.length * sb);
    for (let k = 0; k < indices.length; k++) {
      const idx = indices[k]!;
      if (!Number.isInteger(idx) || idx < 0 || idx >= this.size) throw new RangeError(`sample index ${idx} outside 0..${this.size - 1}`);
      out.set(this.pixels.subarray(idx * sb, (idx + 1) * sb), k * sb);
    }
    return out;
  }
}

export function shardName(n: number): string {
  return `shard-${String(n).padStart(5, '0')}.u8`;
}

async function readFully(fh: FileHandle, out: Uint8Array, offset: number, length: number, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, offset + done, length - done, position + done);
    if (bytesRead === 0) throw new DatasetError(path, `unexpected end of shard at byte ${position + done}`);
    done += bytesRead;
  }
}

function parseManifest(file: string, text: string): DatasetManifest {
  let m: Partial<DatasetManifest>;
  try {
    m = JSON.parse(text) as Partial<DatasetManifest>;
  } catch (err) {
    throw new DatasetError(file, `not valid JSON (${(err as Error).message})`);
  }
  const bad = (field: string): never => {
    throw new DatasetError(file, `field ${field} is missing or invalid`);
  };
  if (typeof m !== 'object' || m === null) bad('(root)');
  if (typeof m.name !== 'string') bad('name');
  if (typeof m.format !== 'string') bad('format');
  if (!Array.isArray(m.classes) || !m.classes.every((c) => typeof c === 'string')) bad('classes');
  if (!Number.isInteger(m.height) || m.height! < 1) bad('height');
  if (!Number.isInteger(m.width) || m.width! < 1) bad('width');
  if (!Number.isInteger(m.size) || m.size! < 0) bad('size');
  if (typeof m.hash !== 'string') bad('hash');
  if (
    !Array.isArray(m.shards) ||
    !m.shards.every(
      (s) =>
        typeof s.file === 'string' &&
        !s.file.includes('/') &&
        !s.file.includes('..') &&
        Number.isInteger(s.count) &&
        typeof s.sha256 === 'string',
    )
  )
    bad('shards');
  if (
    typeof m.index !== 'object' ||
    m.index === null ||
    typeof m.index.file !== 'string' ||
    m.index.file.includes('/') ||
    typeof m.index.sha256 !== 'string'
  )
    bad('index');
  return m as DatasetManifest;
}
