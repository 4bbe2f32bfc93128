// The shared CIFAR-10 JPEG copy, extracted on demand into <repo>/.cache (never into source
// folders). Tests, benchmarks and the CLI call ensureCifar10() instead of assuming the files.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pathExists } from './files.js';

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

const ARCHIVE = 'cifar10-jpg.tar.gz';
const FOLDER = 'cifar10-jpg';
/** Images per class in the shared archive: a smaller count means a partial extraction. */
const EXPECTED_PER_CLASS = { train: 5000, test: 900 } as const;

export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The archive: env BACKDOOR_AUDIT_SHARED_DATA (the shared data folder, or the archive itself), else ../shared/data. */
export function cifar10ArchivePath(): string {
  const env = process.env.BACKDOOR_AUDIT_SHARED_DATA;
  if (env) return env.endsWith('.tar.gz') ? resolve(env) : resolve(env, ARCHIVE);
  return resolve(repoRoot, '..', 'shared', 'data', ARCHIVE);
}

/**
 * Folders of the train and test splits (ImageFolder layout), extracting the archive first when
 * they are missing or incomplete. Extraction goes to a temporary sibling folder that is
 * renamed into place, so an interrupted run never leaves a half-extracted copy behind.
 */
export async function ensureCifar10(
  cacheDir: string = join(repoRoot, '.cache'),
): Promise<{ train: string; test: string; classes: string[] }> {
  const target = join(resolve(cacheDir), FOLDER);
  const result = { train: join(target, 'train'), test: join(target, 'test'), classes: [...CIFAR10_CLASSES] };
  if (await isComplete(target)) return result;

  const archive = cifar10ArchivePath();
  try {
    await stat(archive);
  } catch {
    throw new Error(`${archive}: CIFAR-10 archive not found; set BACKDOOR_AUDIT_SHARED_DATA to the folder holding ${ARCHIVE}`);
  }
  await mkdir(dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
  await mkdir(tmp);
  try {
    await promisify(execFile)('tar', ['-xzf', archive, '-C', tmp], { maxBuffer: 16 << 20 });
    const extracted = join(tmp, FOLDER);
    if (!(await isComplete(extracted))) {
      throw new Error(`${archive}: archive does not contain a complete ${FOLDER}/{train,test}/<class> tree`);
    }
    // An incomplete earlier copy is moved aside first, since rename cannot replace a non-empty folder.
    if (await pathExists(target)) {
      if (await isComplete(target)) return result; // another process finished first
      const aside = `${target}.old-${randomBytes(6).toString('hex')}`;
      await rename(target, aside);
      await rm(aside, { recursive: true, force: true });
    }
    try {
      await rename(extracted, target);
    } catch (err) {
      if (!(await isComplete(target))) throw err; // lost a race to a complete copy: fine
    }
    return result;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
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
