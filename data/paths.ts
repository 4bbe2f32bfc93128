// Where the project keeps things on disk, and the environment variables that move them. Every
// reader of BACKDOOR_AUDIT_STATE, _STORE, _SHARED_DATA and _CIFAR10_BINARY goes through here, so that each
// variable means one thing. They are read on every call: tests and the CLI set them at run time.
import { statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The checkout: this file is `<repo>/data/paths.ts`, or `<repo>/dist/<build>/data/paths.js` when
 * a compiled build runs (bin/dist.js), whose data, pipelines and state are the checkout's too.
 */
const parent = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot: string = import.meta.url.endsWith('.js') && basename(dirname(parent)) === 'dist' ? dirname(dirname(parent)) : parent;

/** State folder (embedded server database, default artifact store): BACKDOOR_AUDIT_STATE, else `<repo>/.state`. */
export function stateDir(): string {
  return resolve(process.env.BACKDOOR_AUDIT_STATE ?? join(repoRoot, '.state'));
}

/** Artifact store root: BACKDOOR_AUDIT_STORE, else `<state>/artifacts`. */
export function storeRoot(): string {
  return resolve(process.env.BACKDOOR_AUDIT_STORE ?? join(stateDir(), 'artifacts'));
}

/**
 * The shared data folder (the CIFAR-10 archive, `triggers/`): BACKDOOR_AUDIT_SHARED_DATA,
 * else `shared/data` beside the checkout.
 */
export function sharedDataDir(): string {
  return resolve(process.env.BACKDOOR_AUDIT_SHARED_DATA ?? join(repoRoot, '..', 'shared', 'data'));
}

/**
 * Copies of shared data that ship with the checkout (`data/bundled`): the CIFAR-10 subset the
 * demo needs and the default 32x32 triggers. Used when the shared data folder lacks them.
 */
export const bundledDataDir: string = join(repoRoot, 'data', 'bundled');

/** A file of the shared data folder when it is there, else undefined (no error). */
export function findSharedDataFile(...parts: string[]): string | undefined {
  const file = join(sharedDataDir(), ...parts);
  return isFile(file) ? file : undefined;
}

/**
 * The official CIFAR-10 binary archive (`cifar-10-binary.tar.gz`) that `format: cifar10` reads
 * instead of the shared JPEG copy: BACKDOOR_AUDIT_CIFAR10_BINARY, else undefined. Relative paths
 * are taken from the working folder.
 */
export function cifar10BinaryArchive(): string | undefined {
  const env = process.env.BACKDOOR_AUDIT_CIFAR10_BINARY;
  return env === undefined || env === '' ? undefined : resolve(env);
}

/**
 * A file of the shared data folder, e.g. `sharedDataFile('triggers', 'hellokitty_32.png')`.
 * Throws, naming the variable and the path, when it is not there: a wrong or unset variable is
 * the usual cause, and the message says which.
 */
export function sharedDataFile(...parts: string[]): string {
  const dir = sharedDataDir();
  const file = join(dir, ...parts);
  if (isFile(file)) return file;
  const env = process.env.BACKDOOR_AUDIT_SHARED_DATA;
  const setting =
    env === undefined
      ? `BACKDOOR_AUDIT_SHARED_DATA is not set, so the default ${dir} was used`
      : isFile(dir)
        ? `BACKDOOR_AUDIT_SHARED_DATA=${env} is a file; it must name the folder that holds it`
        : `BACKDOOR_AUDIT_SHARED_DATA=${env}`;
  throw new Error(`${file}: not found (${setting}); set BACKDOOR_AUDIT_SHARED_DATA to the shared data folder`);
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false; // missing, or a file where a folder was expected (ENOTDIR)
  }
}
