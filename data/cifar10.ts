// The shared CIFAR-10 JPEG copy, extracted on demand into <repo>/.cache (never into source
// folders). Tests, benchmarks and the CLI call ensureCifar10() instead of assuming the files.

import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { publishDir } from './files.js';
import { repoRoot, sharedDataFile } from './paths.js';

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
