// Ingest: decode a dataset once into fixed-size uint8 shards (NHWC, RGB) that every later stage
// reads by index (data/dataset.ts). Memory stays bounded by the decode window and one open shard,
// whatever the dataset size; the output folder appears only when complete. How one image is
// decoded, and the memory budget for it: data/decode.ts.

import pMap, { pMapIterable } from 'p-map';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, readdir, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { INDEX_FILE, MANIFEST_FILE, openDataset, shardName, type DatasetManifest, type SampleEntry } from './dataset.js';
import { DatasetError } from './dataset-error.js';
import {
  checkImageHeader,
  decodeCifarRecord,
  decodeImage,
  decodeLimits,
  decodeMemoryFromEnv,
  DEFAULT_DECODE_MEMORY,
  MAX_DECODE_CONCURRENCY,
} from './decode.js';
import { folderOverlap, publishDir } from './files.js';
import { canonicalJson, sha256Hex } from './hash.js';
import {
  CIFAR_RECORD_BYTES,
  compareIds,
  datasetRoots,
  discoverDataset,
  type DatasetSpec,
  type SampleRef,
  type SampleSource,
} from './formats.js';
import type { ImageSource } from './types.js';

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

const DEFAULT_SHARD_SIZE = 4096;
/** Samples read per batch when writing an ImageSource out. */
const WRITE_BATCH = 256;
/** Part of every dataset hash: a change to decoding must change the hash of every dataset. */
const INGEST_PIPELINE = 'sharp-fill-srgb-v1';
const PIXELS_PIPELINE = 'pixels-v1';

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
