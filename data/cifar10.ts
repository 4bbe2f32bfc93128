// CIFAR-10 as `format: cifar10` finds it, in this order:
//  1. the official binary archive named by BACKDOOR_AUDIT_CIFAR10_BINARY (cifar-10-binary.tar.gz),
//     its .bin files extracted into <repo>/.cache and read as `cifar-binary`;
//  2. the shared CIFAR-10 JPEG copy (cifar10-jpg.tar.gz in the shared data folder), extracted on
//     demand into <repo>/.cache (never into source folders);
//  3. the subset bundled with the checkout (data/bundled/cifar10: the first 50 training and 20
//     test images of each class, the demo's limits), read in place.
// Tests and benchmarks that need the full set call ensureCifar10() (the shared copy only).

import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { publishDir } from './files.js';
import { DatasetError } from './dataset-error.js';
import type { DatasetSpec } from './formats.js';
import { sha256Hex } from './hash.js';
import { bundledDataDir, cifar10BinaryArchive, findSharedDataFile, repoRoot, sharedDataDir, sharedDataFile } from './paths.js';

/** Class names in label order (index 0..9), as in the shared data README. */
export const CIFAR10_CLASSES: readonly string[] = [
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
];

/** The archive's name in the shared data folder. */
export const CIFAR10_ARCHIVE = 'cifar10-jpg.tar.gz';
const FOLDER = 'cifar10-jpg';
/** Images per class in the shared archive: a smaller count means a partial extraction. */
const EXPECTED_PER_CLASS = { train: 5000, test: 900 } as const;

/**
 * Folders of the train and test splits (ImageFolder layout), extracting the archive first when
 * they are missing or incomplete. Extraction is published atomically (publishDir), so an
 * interrupted run never leaves a half-extracted copy behind.
 */
export async function ensureCifar10(
  cacheDir: string = join(repoRoot, '.cache'),
): Promise<{ train: string; test: string; classes: string[] }> {
  const target = join(resolve(cacheDir), FOLDER);
  const result = { train: join(target, 'train'), test: join(target, 'test'), classes: [...CIFAR10_CLASSES] };
  if (await isComplete(target)) return result;

  const archive = sharedDataFile(CIFAR10_ARCHIVE);
  return publishDir(
    target,
    async (tmp) => {
      await promisify(execFile)('tar', ['-xzf', archive, '-C', tmp, '--strip-components=1', FOLDER], { maxBuffer: 16 << 20 });
      if (!(await isComplete(tmp))) {
        throw new Error(`${archive}: archive does not contain a complete ${FOLDER}/{train,test}/<class> tree`);
      }
      return result;
    },
    // A complete copy there means another process finished first; an incomplete one is replaced.
    { keepExisting: async () => ((await isComplete(target)) ? result : undefined), replace: true },
  );
}

async function isComplete(folder: string): Promise<boolean> {
  for (const [split, expected] of Object.entries(EXPECTED_PER_CLASS)) {
    for (const cls of CIFAR10_CLASSES) {
      let names: string[];
      try {
        names = await readdir(join(folder, split, cls));
      } catch {
        return false;
      }
      if (names.filter((n) => n.endsWith('.jpg')).length < expected) return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Where `format: cifar10` reads from.

/** Images per class in the bundled subset (data/bundled/cifar10). */
export const BUNDLED_PER_CLASS = { train: 50, test: 20 } as const;
/** The bundled subset: ImageFolder trees `train/<class>` and `test/<class>`. */
export const bundledCifar10Dir = (): string => join(bundledDataDir, 'cifar10');

/** Where `format: cifar10` reads from: see the file comment for the order. */
export type Cifar10Origin =
  { kind: 'binary'; archive: string } | { kind: 'shared'; archive: string } | { kind: 'bundled'; dir: string; missing: string };

/** The origin `format: cifar10` uses now (the variables are read on every call). */
export function cifar10Origin(): Cifar10Origin {
  const binary = cifar10BinaryArchive();
  if (binary !== undefined) return { kind: 'binary', archive: binary };
  const shared = findSharedDataFile(CIFAR10_ARCHIVE);
  if (shared !== undefined) return { kind: 'shared', archive: shared };
  return { kind: 'bundled', dir: bundledCifar10Dir(), missing: join(sharedDataDir(), CIFAR10_ARCHIVE) };
}

/** One line saying which CIFAR-10 copy is read (it ends the ingest stage's figure). */
export function describeCifar10Origin(origin: Cifar10Origin): string {
  switch (origin.kind) {
    case 'binary':
      return `CIFAR-10 from the binary archive ${origin.archive} (BACKDOOR_AUDIT_CIFAR10_BINARY)`;
    case 'shared':
      return `CIFAR-10 from the shared archive ${origin.archive}`;
    case 'bundled':
      return (
        `CIFAR-10 from the bundled subset ${relative(repoRoot, origin.dir)} ` +
        `(${BUNDLED_PER_CLASS.train} train / ${BUNDLED_PER_CLASS.test} test images per class; no ${origin.missing})`
      );
  }
}

/** A resolved `format: cifar10` split: the ingest spec to read and where it comes from. */
export interface Cifar10Split {
  spec: DatasetSpec;
  origin: Cifar10Origin;
  description: string;
}

/**
 * The ingest spec of CIFAR-10 split `split`, from the origin cifar10Origin() picks (extracting
 * an archive into `cacheDir` first when needed). With only the bundled subset there, a
 * `limitPerClass` larger than it holds, or none, is refused with a DatasetError that names what
 * to set: the subset is never passed off as the full set.
 */
export async function resolveCifar10(
  split: 'train' | 'test',
  opts: { limitPerClass?: number; cacheDir?: string } = {},
): Promise<Cifar10Split> {
  const origin = cifar10Origin();
  const description = describeCifar10Origin(origin);
  const cacheDir = opts.cacheDir ?? join(repoRoot, '.cache');
  switch (origin.kind) {
    case 'shared': {
      const cifar = await ensureCifar10(cacheDir);
      return { spec: { format: 'imagefolder', root: split === 'train' ? cifar.train : cifar.test }, origin, description };
    }
    case 'binary': {
      const files = await ensureCifar10Binary(origin.archive, cacheDir);
      return { spec: { format: 'cifar-binary', files: files[split], classes: [...CIFAR10_CLASSES] }, origin, description };
    }
    case 'bundled': {
      const held = BUNDLED_PER_CLASS[split];
      const limit = opts.limitPerClass;
      if (limit === undefined || limit > held) {
        const asked = limit === undefined ? 'no limitPerClass (the whole split)' : `limitPerClass ${limit}`;
        throw new DatasetError(
          origin.missing,
          `not found, and the bundled CIFAR-10 subset (${relative(repoRoot, origin.dir)}) holds only ${held} ${split} images per class, ` +
            `but ${asked} was asked for the ${split} split; set BACKDOOR_AUDIT_SHARED_DATA to the folder holding ${CIFAR10_ARCHIVE}, ` +
            `or BACKDOOR_AUDIT_CIFAR10_BINARY to the path of the official cifar-10-binary.tar.gz, ` +
            `or set limitPerClass to ${held} or less`,
        );
      }
      return { spec: { format: 'imagefolder', root: join(origin.dir, split) }, origin, description };
    }
  }
}

/** The folder `format: cifar10` split `split` is read from, without extracting anything. */
export function cifar10Root(split: 'train' | 'test', cacheDir: string = join(repoRoot, '.cache')): string {
  const origin = cifar10Origin();
  switch (origin.kind) {
    case 'shared':
      return join(resolve(cacheDir), FOLDER, split);
    case 'binary':
      return resolve(cacheDir);
    case 'bundled':
      return join(origin.dir, split);
  }
}

/**
 * The identity of CIFAR-10 split `split` as cifar10Origin() finds it, without extracting
 * anything. The origin is part of it, so results cached from the bundled subset never pass for
 * the shared copy's or the binary archive's (and the reverse). The shared archive's line is the
 * one used before the other origins existed, so its fingerprints stay valid.
 */
export async function cifar10Fingerprint(split: 'train' | 'test'): Promise<string> {
  const origin = cifar10Origin();
  switch (origin.kind) {
    case 'shared': {
      // The archive stands for the split.
      const st = await stat(sharedDataFile(CIFAR10_ARCHIVE));
      return sha256Hex(`cifar10|${split}|${st.size}|${Math.trunc(st.mtimeMs)}`);
    }
    case 'binary': {
      const st = await statArchive(origin.archive);
      return sha256Hex(`cifar10-binary|${split}|${origin.archive}|${st.size}|${Math.trunc(st.mtimeMs)}`);
    }
    case 'bundled': {
      // By content: a checkout's mtimes are the clone's, its bytes are the repository's.
      const root = join(origin.dir, split);
      const lines = [`cifar10-bundled|${split}`];
      for (const cls of CIFAR10_CLASSES) {
        const names = (await readdir(join(root, cls))).filter((n) => n.endsWith('.jpg')).sort();
        for (const n of names) lines.push(`${cls}/${n}\t${sha256Hex(await readFile(join(root, cls, n)))}`);
      }
      return sha256Hex(lines.join('\n'));
    }
  }
}

async function statArchive(archive: string) {
  try {
    const st = await stat(archive);
    if (st.isFile()) return st;
  } catch {
    // reported below
  }
  throw new DatasetError(
    archive,
    `not found or not a file (BACKDOOR_AUDIT_CIFAR10_BINARY=${process.env.BACKDOOR_AUDIT_CIFAR10_BINARY}); ` +
      'set it to the official cifar-10-binary.tar.gz, or unset it to use the shared JPEG copy',
  );
}

const BATCH = /^data_batch_(\d+)\.bin$/;
const TEST_BATCH = 'test_batch.bin';

/**
 * The .bin files of the official CIFAR-10 binary archive (`cifar-10-batches-bin/data_batch_1..5.bin`
 * and `test_batch.bin`), extracted (only they) into `<cacheDir>/cifar-10-binary-<id>`, where the
 * id follows the archive's path, size and mtime: a replaced archive is extracted afresh.
 */
export async function ensureCifar10Binary(
  archive: string,
  cacheDir: string = join(repoRoot, '.cache'),
): Promise<{ train: string[]; test: string[] }> {
  const st = await statArchive(archive);
  const id = sha256Hex(`${resolve(archive)}|${st.size}|${Math.trunc(st.mtimeMs)}`).slice(0, 16);
  const target = join(resolve(cacheDir), `cifar-10-binary-${id}`);
  const existing = await binaryFiles(target);
  if (existing) return existing;
  await publishDir(
    target,
    async (tmp) => {
      try {
        // Only the batches: GNU tar keeps members inside tmp (no absolute paths, no `..`).
        await promisify(execFile)('tar', ['-xzf', archive, '-C', tmp, '--wildcards', '--no-anchored', 'data_batch_*.bin', TEST_BATCH], {
          maxBuffer: 16 << 20,
        });
      } catch (e) {
        const detail = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
        throw new DatasetError(archive, `not a CIFAR-10 binary archive (tar.gz with data_batch_<n>.bin and ${TEST_BATCH}): ${detail}`);
      }
      if (!(await binaryFiles(tmp))) {
        throw new DatasetError(archive, `holds no data_batch_<n>.bin and ${TEST_BATCH} in one folder (the cifar-10-batches-bin layout)`);
      }
      return true;
    },
    // A complete copy there means another process finished first; an incomplete one is replaced.
    { keepExisting: async () => ((await binaryFiles(target)) ? true : undefined), replace: true },
  );
  const files = await binaryFiles(target);
  if (!files) throw new DatasetError(archive, `extraction into ${target} left no batches`);
  return files;
}

/** The batches under `dir` (in it or in one folder below, e.g. cifar-10-batches-bin/), or undefined. */
async function binaryFiles(dir: string): Promise<{ train: string[]; test: string[] } | undefined> {
  const candidates = [dir];
  try {
    for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) candidates.push(join(dir, e.name));
  } catch {
    return undefined;
  }
  for (const d of candidates.sort()) {
    const names = await readdir(d);
    const batches = names
      .map((n) => BATCH.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .sort((a, b) => Number(a[1]) - Number(b[1]))
      .map((m) => join(d, m[0]));
    if (batches.length && names.includes(TEST_BATCH)) return { train: batches, test: [join(d, TEST_BATCH)] };
  }
  return undefined;
}
