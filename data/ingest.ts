// Ingest: decode a dataset once into fixed-size uint8 shards (NHWC, RGB) that every later stage
// reads by index. Memory stays bounded by the decode window and one open shard, whatever the
// dataset size; the output folder appears only when complete.
//
// Layout of an ingested dataset folder:
//   shard-00000.u8 ...   raw pixels, `count` samples of height*width*3 bytes each, in sample order
//   samples.jsonl        one {"id","label","sha256"} line per sample, in sample order
//   dataset.json         the DatasetManifest, written last (its presence marks a complete folder)
//
// Resizing uses fit 'fill' (stretch to imageSize x imageSize, no crop): backdoor triggers often
// sit in a corner, and a centre crop ('cover') could cut them off and hide the very thing the
// audit looks for. EXIF orientation is applied, alpha is dropped, grey/CMYK become sRGB.
//
// Decode memory is bounded by a budget (IngestOptions.decodeMemory, else the variable
// BACKDOOR_AUDIT_DECODE_MEMORY, else 1 GiB): see decodeLimits. Every image's header is read in
// the first pass (imageHeader: no pixels decoded), so an image too large for the budget is
// refused, naming it and its size, before anything is decoded or written; the decode itself
// runs under sharp's limitInputPixels with the same limit.

import pMap, { pMapIterable } from 'p-map';
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, readdir, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { folderOverlap, publishDir } from './files.js';
import { canonicalJson, sha256File, sha256Hex } from './hash.js';
import {
  CIFAR_RECORD_BYTES,
  CIFAR_SIDE,
  DatasetError,
  compareIds,
  datasetRoots,
  discoverDataset,
  type DatasetSpec,
  type SampleRef,
  type SampleSource,
} from './formats.js';
import type { ImageSource } from './types.js';

export { DatasetError, type DatasetSpec } from './formats.js';

export interface IngestOptions {
  /** Output images are imageSize x imageSize x 3. */
  imageSize: number;
  /** Dataset name in the manifest (default: folder / manifest / first binary file name). */
  name?: string;
  /** Keep the first N samples of each class in id order (for subsets). */
  limitPerClass?: number;
  /** Samples per shard file (default 4096). */
  shardSize?: number;
  /**
   * Bytes that decoding may hold at once (default: BACKDOOR_AUDIT_DECODE_MEMORY, else 1 GiB).
   * Sets how many images are decoded at once and the largest image accepted (decodeLimits).
   */
  decodeMemory?: number;
  /**
   * Progress of the two passes: 'hash' (reading and hashing every source, before anything is
   * decoded) then 'decode'. When an existing output is reused, 'decode' is reported once as done.
   */
  onProgress?: (done: number, total: number, phase: IngestPhase) => void;
  signal?: AbortSignal;
}

type IngestPhase = 'hash' | 'decode';

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

const MANIFEST_FILE = 'dataset.json';
const INDEX_FILE = 'samples.jsonl';
const DEFAULT_SHARD_SIZE = 4096;
/** Images decoded at once at most: enough to keep sharp's thread pool busy. */
const MAX_DECODE_CONCURRENCY = 4;
/** Decode memory when neither the option nor the variable gives one. */
export const DEFAULT_DECODE_MEMORY = 1024 ** 3;
/** The variable that sets the decode memory of a worker (bytes, or e.g. 512MiB, 2GiB). */
export const DECODE_MEMORY_VARIABLE = 'BACKDOOR_AUDIT_DECODE_MEMORY';
/**
 * The smallest share of the budget one decode gets before fewer images are decoded at once: a
 * 4096x4096 8-bit RGBA raster (64 MiB), so a small budget keeps accepting usual photo sizes.
 */
const MIN_DECODE_SHARE = 4096 * 4096 * 4;
/** Open shard handles kept by a ShardedDataset. */
const MAX_OPEN_SHARDS = 8;
/** Samples read per batch when writing an ImageSource out. */
const WRITE_BATCH = 256;
/** Part of every dataset hash: a change to decoding must change the hash of every dataset. */
const INGEST_PIPELINE = 'sharp-fill-srgb-v1';
const PIXELS_PIPELINE = 'pixels-v1';

interface SampleEntry {
  id: string;
  label: number;
  /** Content hash: of the source file, the CIFAR record, or the pixels (writeDataset). */
  sha256: string;
}

/**
 * How decoding shares its memory budget. A decoder may hold an image's whole raster (an
 * interlaced PNG, a WebP, a rotation does: a 16000x16000 interlaced PNG took 755 MB), so each
 * image is costed at width x height x channels x bytes per sample, from its header. Up to
 * MAX_DECODE_CONCURRENCY images are decoded at once, fewer when the budget is too small to give
 * each MIN_DECODE_SHARE; an image costing more than its share (`perImage`) is refused. With
 * the default 1 GiB: 4 at once, 256 MiB each, i.e. up to 89 megapixels of 8-bit RGB
 * (about 9400x9400) or 67 of 8-bit RGBA (8192x8192).
 */
export interface DecodeLimits {
  memory: number;
  concurrency: number;
  /** Bytes one decode may take. */
  perImage: number;
}

export function decodeLimits(memory: number): DecodeLimits {
  if (!Number.isFinite(memory) || memory < 1 << 20) throw new Error(`decode memory must be at least 1 MiB, got ${memory} bytes`);
  const concurrency = Math.max(1, Math.min(MAX_DECODE_CONCURRENCY, Math.floor(memory / MIN_DECODE_SHARE)));
  return { memory, concurrency, perImage: Math.floor(memory / concurrency) };
}

/** The decode memory set by BACKDOOR_AUDIT_DECODE_MEMORY: bytes, or a number with K/M/G/T (binary units, optional "iB"/"B"). */
export function decodeMemoryFromEnv(): number | undefined {
  const value = process.env[DECODE_MEMORY_VARIABLE];
  if (value === undefined || value.trim() === '') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
  if (!m) throw new Error(`${DECODE_MEMORY_VARIABLE}=${value}: expected bytes or a size such as 512MiB or 2GiB`);
  const bytes = Math.floor(Number(m[1]) * 1024 ** ['', 'k', 'm', 'g', 't'].indexOf(m[2]!.toLowerCase()));
  if (bytes < 1 << 20) throw new Error(`${DECODE_MEMORY_VARIABLE}=${value}: at least 1MiB is needed to decode images`);
  return bytes;
}

/** Decodes a dataset into shards under outDir, or reuses outDir when it already holds the same data. */
export async function ingest(spec: DatasetSpec, outDir: string, opts: IngestOptions): Promise<DatasetManifest> {
  const size = opts.imageSize;
  if (!Number.isInteger(size) || size < 1 || size > 4096) throw new Error(`imageSize must be an integer in 1..4096, got ${size}`);
  const limit = opts.limitPerClass;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
    throw new Error(`limitPerClass must be a positive integer, got ${limit}`);
  const limits = decodeLimits(opts.decodeMemory ?? decodeMemoryFromEnv() ?? DEFAULT_DECODE_MEMORY);
  const target = resolve(outDir);
  // By real path, so that a link to the dataset (or a dataset reached through one) is caught too.
  for (const { dir } of datasetRoots(spec)) {
    const overlap = await folderOverlap(target, dir);
    if (overlap) {
      const how = overlap === 'same' ? 'is' : overlap === 'inside' ? 'is inside' : 'contains';
      throw new DatasetError(target, `output folder ${how} the input dataset folder ${dir}; input datasets are never modified`);
    }
  }

  const found = await discoverDataset(spec);
  const samples = limit === undefined ? found.samples : firstPerClass(found.samples, limit);
  const reader = new SourceReader();

  // Pass 1: content hashes (cheap), so that an unchanged dataset is recognised before decoding,
  // and image headers, so that an image too large to decode is refused before anything is.
  const pixelLimits = new Float64Array(samples.length);
  let hashed = 0;
  const hashes = await pMap(
    samples,
    async (s, i) => {
      const bytes = await reader.read(s.source);
      const h = sha256Hex(bytes);
      if (s.source.kind === 'file') pixelLimits[i] = await checkImageHeader(bytes, s.source.path, limits);
      if (++hashed % 256 === 0 || hashed === samples.length) opts.onProgress?.(hashed, samples.length, 'hash');
      return h;
    },
    { concurrency: limits.concurrency, signal: opts.signal },
  );
  const entries: SampleEntry[] = samples.map((s, i) => ({ id: s.id, label: s.label, sha256: hashes[i]! }));
  const hash = datasetHash(INGEST_PIPELINE, found.classes, size, size, entries);
  const existing = await existingManifest(target);
  if (existing?.hash === hash) {
    opts.onProgress?.(samples.length, samples.length, 'decode');
    return existing;
  }

  // Pass 2: decode. Each source is re-read and re-hashed, so a file edited in between is caught.
  const decodeSample = async (i: number): Promise<Uint8Array> => {
    const s = samples[i]!;
    const bytes = await reader.read(s.source);
    if (sha256Hex(bytes) !== entries[i]!.sha256) throw new DatasetError(s.source.path, 'changed while being ingested; run again');
    return s.source.kind === 'file'
      ? decodeImage(bytes, s.source.path, size, pixelLimits[i]!)
      : decodeCifarRecord(bytes, s.source.path, size);
  };
  return writeShardedDataset(
    target,
    { name: opts.name ?? found.name, format: found.format, classes: found.classes, height: size, width: size },
    samples.length,
    decodeSample,
    () => ({ entries, hash }),
    { ...opts, concurrency: limits.concurrency },
  );
}

/** Writes any ImageSource (e.g. a poisoned copy made by an attack) as a sharded dataset folder. */
export async function writeDataset(source: ImageSource, outDir: string, name: string): Promise<DatasetManifest> {
  const n = source.size;
  const sampleBytes = source.height * source.width * 3;
  if (source.labels.length !== n || source.ids.length !== n) {
    throw new Error(`writeDataset: source has size ${n} but ${source.labels.length} labels and ${source.ids.length} ids`);
  }
  if (new Set(source.ids).size !== n) throw new Error('writeDataset: sample ids are not unique');
  for (let i = 0; i < n; i++) {
    const l = source.labels[i]!;
    if (!Number.isInteger(l) || l < 0 || l >= source.classes.length)
      throw new Error(`writeDataset: sample ${source.ids[i]} has label ${l}, outside ${source.classes.length} classes`);
  }
  const hashes: string[] = new Array<string>(n);
  // Samples are requested in increasing order, so one batch read serves WRITE_BATCH of them.
  let batchStart = -1;
  let batch: Promise<Uint8Array> = Promise.resolve(new Uint8Array(0));
  const readSample = async (i: number): Promise<Uint8Array> => {
    const start = i - (i % WRITE_BATCH);
    if (start !== batchStart) {
      batchStart = start;
      const idx = Array.from({ length: Math.min(WRITE_BATCH, n - start) }, (_, k) => start + k);
      batch = source.readImages(idx);
    }
    const data = await batch;
    const px = data.subarray((i - start) * sampleBytes, (i - start + 1) * sampleBytes);
    hashes[i] = sha256Hex(px);
    return px;
  };
  return writeShardedDataset(
    resolve(outDir),
    { name, format: 'pixels', classes: [...source.classes], height: source.height, width: source.width },
    n,
    readSample,
    () => {
      const entries = Array.from({ length: n }, (_, i) => ({ id: source.ids[i]!, label: source.labels[i]!, sha256: hashes[i]! }));
      return { entries, hash: datasetHash(PIXELS_PIPELINE, [...source.classes], source.height, source.width, entries) };
    },
    {},
  );
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

// ---------------------------------------------------------------------------------------------

function firstPerClass(samples: SampleRef[], limit: number): SampleRef[] {
  const taken = new Map<number, number>();
  return samples.filter((s) => {
    const n = taken.get(s.label) ?? 0;
    taken.set(s.label, n + 1);
    return n < limit;
  });
}

function datasetHash(pipeline: string, classes: string[], height: number, width: number, entries: SampleEntry[]): string {
  const h = createHash('sha256');
  h.update(canonicalJson({ pipeline, classes, height, width }));
  const order = entries.map((_, i) => i).sort((a, b) => compareIds(entries[a]!.id, entries[b]!.id));
  for (const i of order) {
    const e = entries[i]!;
    h.update(`\n${canonicalJson([e.id, e.label, e.sha256])}`);
  }
  return h.digest('hex');
}

/**
 * Opening flags for sample files: read only, and not through a link. The real path was checked
 * at discovery; a file swapped for a link since then fails to open (ELOOP) instead of being read.
 */
const READ_NO_FOLLOW = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

/** Reads sample sources; keeps the last CIFAR binary file in memory since its records are read in order. */
class SourceReader {
  private cached: { path: string; data: Promise<Buffer> } | undefined;

  async read(source: SampleSource): Promise<Uint8Array> {
    if (source.kind === 'file') {
      try {
        return await readFile(source.realPath, { flag: READ_NO_FOLLOW });
      } catch (err) {
        throw new DatasetError(source.path, `cannot read file: ${(err as Error).message}`);
      }
    }
    if (this.cached?.path !== source.path) {
      const path = source.path;
      this.cached = {
        path,
        data: readFile(source.realPath, { flag: READ_NO_FOLLOW }).catch((err: Error) => {
          throw new DatasetError(path, `cannot read file: ${err.message}`);
        }),
      };
    }
    const data = await this.cached.data;
    if (source.offset + CIFAR_RECORD_BYTES > data.length) throw new DatasetError(source.path, 'file shrank while being ingested');
    return data.subarray(source.offset, source.offset + CIFAR_RECORD_BYTES);
  }
}

/** What an image's header says: enough to cost its decode. */
export interface ImageHeader {
  width: number;
  height: number;
  /** Bands the decoder produces (before alpha is dropped). */
  channels: number;
  /** Bytes per band value: 1, or 2 for 16-bit PNGs and 12-bit JPEGs. */
  sampleBytes: number;
}

/** Bytes per sample of a libvips band format (metadata's `depth`). */
const SAMPLE_BYTES: Record<string, number> = {
  uchar: 1,
  char: 1,
  ushort: 2,
  short: 2,
  uint: 4,
  int: 4,
  float: 4,
  complex: 8,
  double: 8,
  dpcomplex: 16,
};

/** PNG colour type -> bands; a palette counts 4, in case it carries transparency. */
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 4, 4: 2, 6: 4 };

/**
 * The header of a PNG, JPEG or WebP read directly from its first bytes, in microseconds:
 * sharp's metadata() costs about 0.2 ms an image, a fifth of ingest's time on CIFAR-size
 * images. Undefined for any other format or any header it does not follow (a JPEG whose
 * height comes after the first scan, say): imageHeader() then asks metadata().
 */
export function quickImageHeader(b: Uint8Array): ImageHeader | undefined {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const text = (at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));
  // PNG: the signature, then the IHDR chunk (width, height, bit depth, colour type).
  if (b.length >= 26 && dv.getUint32(0) === 0x89504e47 && dv.getUint32(4) === 0x0d0a1a0a && text(12, 4) === 'IHDR') {
    const channels = PNG_CHANNELS[b[25]!];
    return channels ? { width: dv.getUint32(16), height: dv.getUint32(20), channels, sampleBytes: b[24] === 16 ? 2 : 1 } : undefined;
  }
  // JPEG: marker segments up to the first start-of-frame (precision, height, width, components).
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    for (let i = 2; i + 9 < b.length;) {
      if (b[i] !== 0xff) return undefined;
      const marker = b[i + 1]!;
      if (marker === 0xff) {
        i++; // fill byte
      } else if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
        i += 2; // a marker without a segment
      } else if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        const [height, width] = [dv.getUint16(i + 5), dv.getUint16(i + 7)];
        return height && width ? { width, height, channels: b[i + 9]!, sampleBytes: b[i + 4]! > 8 ? 2 : 1 } : undefined;
      } else if (marker === 0xda || marker === 0xd9) {
        return undefined; // a scan or the end before any frame header
      } else {
        i += 2 + dv.getUint16(i + 2);
      }
    }
    return undefined;
  }
  // WebP: a RIFF container whose first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended).
  if (b.length >= 30 && text(0, 4) === 'RIFF' && text(8, 4) === 'WEBP') {
    const chunk = text(12, 4);
    if (chunk === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) {
      return { width: dv.getUint16(26, true) & 0x3fff, height: dv.getUint16(28, true) & 0x3fff, channels: 3, sampleBytes: 1 };
    }
    if (chunk === 'VP8L' && b[20] === 0x2f) {
      const bits = dv.getUint32(21, true);
      return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, channels: bits & (1 << 28) ? 4 : 3, sampleBytes: 1 };
    }
    if (chunk === 'VP8X') {
      const width = 1 + (b[24]! | (b[25]! << 8) | (b[26]! << 16));
      const height = 1 + (b[27]! | (b[28]! << 8) | (b[29]! << 16));
      return { width, height, channels: b[20]! & 0x10 ? 4 : 3, sampleBytes: 1 };
    }
  }
  return undefined;
}

/** An image's header, without decoding its pixels: quickImageHeader, else sharp's metadata(). */
export async function imageHeader(bytes: Uint8Array, file: string): Promise<ImageHeader> {
  const quick = quickImageHeader(bytes);
  if (quick && quick.width > 0 && quick.height > 0) return quick;
  let meta: Metadata;
  try {
    // No pixel limit here: only the header is read, and checkImageHeader's message says more.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new DatasetError(file, `cannot decode image (${(err as Error).message.split('\n')[0]})`);
  }
  if (!meta.width || !meta.height) throw new DatasetError(file, 'cannot decode image (no width and height in its header)');
  return { width: meta.width, height: meta.height, channels: meta.channels ?? 4, sampleBytes: SAMPLE_BYTES[meta.depth ?? 'uchar'] ?? 8 };
}

/**
 * Refuses an image whose raster would exceed its share of the decode memory, from its header.
 * Returns the pixel limit for its decode (sharp's limitInputPixels), so that libvips holds to
 * the same limit whatever the header parse missed.
 */
async function checkImageHeader(bytes: Uint8Array, file: string, limits: DecodeLimits): Promise<number> {
  const { width, height, channels, sampleBytes } = await imageHeader(bytes, file);
  const pixelLimit = Math.floor(limits.perImage / (channels * sampleBytes));
  if (width * height > pixelLimit) {
    throw new DatasetError(
      file,
      `image is ${width}x${height} (${megapixels(width * height)}, ${channels} channels of ${8 * sampleBytes} bits): decoding it ` +
        `could take ${mib(width * height * channels * sampleBytes)}, over the ${mib(limits.perImage)} (${megapixels(pixelLimit)}) ` +
        `each image may use (${mib(limits.memory)} of decode memory, ${limits.concurrency} images at once); ` +
        `shrink the image, or raise ${DECODE_MEMORY_VARIABLE}`,
    );
  }
  return pixelLimit;
}

const megapixels = (n: number): string => `${(n / 1e6).toFixed(1)} megapixels`;
const mib = (n: number): string => `${Math.round(n / 2 ** 20)} MiB`;

async function decodeImage(bytes: Uint8Array, file: string, size: number, pixelLimit: number): Promise<Uint8Array> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    // The header was checked against the budget; the limit makes libvips hold to it as well.
    out = await sharp(bytes, { failOn: 'warning', limitInputPixels: pixelLimit })
      .rotate()
      .removeAlpha()
      .toColourspace('srgb')
      .resize(size, size, { fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DatasetError(file, `cannot decode image (${(err as Error).message.split('\n')[0]})`);
  }
  const { data, info } = out;
  if (info.channels !== 3 || data.length !== size * size * 3) {
    throw new DatasetError(file, `decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3 uint8`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** CIFAR record: label byte, then 1024 R, 1024 G, 1024 B bytes; converted to HWC. */
async function decodeCifarRecord(record: Uint8Array, file: string, size: number): Promise<Uint8Array> {
  const plane = CIFAR_SIDE * CIFAR_SIDE;
  const hwc = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    hwc[p * 3] = record[1 + p]!;
    hwc[p * 3 + 1] = record[1 + plane + p]!;
    hwc[p * 3 + 2] = record[1 + 2 * plane + p]!;
  }
  if (size === CIFAR_SIDE) return hwc;
  try {
    const data = await sharp(hwc, { raw: { width: CIFAR_SIDE, height: CIFAR_SIDE, channels: 3 } })
      .resize(size, size, { fit: 'fill' })
      .raw()
      .toBuffer();
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  } catch (err) {
    throw new DatasetError(file, `cannot resize CIFAR record (${(err as Error).message})`);
  }
}

async function readFully(fh: FileHandle, out: Uint8Array, offset: number, length: number, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, offset + done, length - done, position + done);
    if (bytesRead === 0) throw new DatasetError(path, `unexpected end of shard at byte ${position + done}`);
    done += bytesRead;
  }
}

interface DatasetMeta {
  name: string;
  format: string;
  classes: string[];
  height: number;
  width: number;
}

/**
 * Streams `count` samples from produce(i) into shard files of a new folder, keeping at most
 * `concurrency` (default MAX_DECODE_CONCURRENCY) samples in flight and writing them in order;
 * then writes the index, the manifest last, and publishes the folder as outDir. An existing
 * dataset with the same hash wins.
 */
async function writeShardedDataset(
  outDir: string,
  meta: DatasetMeta,
  count: number,
  produce: (i: number) => Promise<Uint8Array>,
  describe: () => { entries: SampleEntry[]; hash: string },
  opts: {
    shardSize?: number;
    concurrency?: number;
    onProgress?: (done: number, total: number, phase: IngestPhase) => void;
    signal?: AbortSignal;
  },
): Promise<DatasetManifest> {
  const shardSize = opts.shardSize ?? DEFAULT_SHARD_SIZE;
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new Error(`shardSize must be a positive integer, got ${shardSize}`);
  if (count === 0) throw new Error(`${outDir}: refusing to write an empty dataset`);
  const sampleBytes = meta.height * meta.width * 3;
  await checkReplaceable(outDir); // fail before the work, not after
  const fill = async (tmp: string): Promise<DatasetManifest> => {
    const shards: DatasetManifest['shards'] = [];
    let fh: FileHandle | undefined;
    let shardHash = createHash('sha256');
    let inShard = 0;
    let i = 0;
    try {
      // In order, with a bounded look-ahead: memory stays at `concurrency` samples in flight.
      const concurrency = opts.concurrency ?? MAX_DECODE_CONCURRENCY;
      for await (const px of pMapIterable(Array(count).keys(), produce, { concurrency })) {
        opts.signal?.throwIfAborted();
        if (px.length !== sampleBytes) throw new Error(`sample ${i} has ${px.length} bytes, expected ${sampleBytes}`);
        if (!fh) fh = await open(join(tmp, shardName(shards.length)), 'wx');
        // A write may take only part of the sample (a nearly full disk); the next write of the
        // rest then fails with the real reason (ENOSPC) instead of a vague "short write".
        for (let done = 0; done < px.length;) done += (await fh.write(px, done, px.length - done)).bytesWritten;
        shardHash.update(px);
        inShard++;
        if (inShard === shardSize || i === count - 1) {
          await fh.close();
          fh = undefined;
          shards.push({ file: shardName(shards.length), count: inShard, sha256: shardHash.digest('hex') });
          shardHash = createHash('sha256');
          inShard = 0;
        }
        i++;
        opts.onProgress?.(i, count, 'decode');
      }
    } finally {
      await fh?.close().catch(() => undefined);
    }
    const { entries, hash } = describe();
    const index = entries.map((e) => JSON.stringify({ id: e.id, label: e.label, sha256: e.sha256 })).join('\n') + '\n';
    await writeFile(join(tmp, INDEX_FILE), index);
    const manifest: DatasetManifest = { ...meta, size: count, hash, shards, index: { file: INDEX_FILE, sha256: sha256Hex(index) } };
    await writeFile(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 1) + '\n');
    return manifest;
  };
  return publishDir(outDir, fill, {
    keepExisting: async (dir, written) => {
      const existing = await existingManifest(dir);
      if (existing?.hash === written.hash) return existing;
      await checkReplaceable(dir); // an unrelated folder appeared meanwhile: never replace it
      return undefined;
    },
    replace: true,
  });
}

/** Only an empty folder or a previous dataset output may be replaced, never an unrelated folder or file. */
async function checkReplaceable(outDir: string): Promise<void> {
  const st = await stat(outDir).catch(() => undefined);
  if (!st) return;
  const names = st.isDirectory() ? await readdir(outDir) : ['(a file)'];
  if (names.length > 0 && !names.includes(MANIFEST_FILE)) {
    throw new DatasetError(outDir, 'output path exists and is not a dataset folder; choose another output folder');
  }
}

async function existingManifest(dir: string): Promise<DatasetManifest | undefined> {
  try {
    const ds = await openDataset(dir);
    await ds.close();
    return ds.manifest;
  } catch {
    return undefined;
  }
}

function shardName(n: number): string {
  return `shard-${String(n).padStart(5, '0')}.u8`;
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
