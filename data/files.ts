// Small file-system helpers shared by every layer: one way to write a file atomically, one way
// to publish a folder atomically.
import { mkdir, realpath, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A fresh name beside `target` for writing before the rename. */
function tempSibling(target: string): string {
  return `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Writes a file so that readers see either the old or the complete new content. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = tempSibling(file);
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface PublishDirOptions<T> {
  /**
   * When `target` is taken (and `keepExisting` did not keep it): true moves it aside and
   * removes it once the new folder is in place; false tries the rename again, for a
   * `keepExisting` that clears a bad folder away itself.
   */
  replace: boolean;
  /**
   * Called when `target` is taken, with what `fill` returned. A value means the folder there
   * stands (another writer published first) and is what publishDir returns; the new folder is
   * discarded. Undefined lets `replace` decide. May throw to refuse.
   */
  keepExisting?: (target: string, filled: T) => Promise<T | undefined>;
  /** Folder for the temporary folder (default: beside `target`); must be on the same file system. */
  tmpParent?: string;
}

/** Renames before giving up: each failure is a concurrent writer taking `target` again. */
const PUBLISH_ATTEMPTS = 4;
/** rename(2) errors that mean `target` is there (a non-empty folder, or a file). */
const TAKEN = new Set(['EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR']);

/**
 * Publishes folder `target` atomically: `fill` writes into a fresh temporary folder, which is
 * then renamed into place, so readers never see a half-written folder. Returns what `fill`
 * returned, or what `keepExisting` kept. On any failure the temporary folder is removed.
 */
export async function publishDir<T>(target: string, fill: (tmp: string) => Promise<T>, opts: PublishDirOptions<T>): Promise<T> {
  const parent = opts.tmpParent ?? dirname(target);
  await mkdir(parent, { recursive: true });
  await mkdir(dirname(target), { recursive: true });
  const tmp = join(parent, basename(tempSibling(target)));
  await mkdir(tmp);
  const asides: string[] = [];
  try {
    const filled = await fill(tmp);
    for (let attempt = 1; ; attempt++) {
      try {
        await rename(tmp, target);
        return filled;
      } catch (err) {
        if (!TAKEN.has((err as NodeJS.ErrnoException).code ?? '') || attempt === PUBLISH_ATTEMPTS) throw err;
      }
      const kept = await opts.keepExisting?.(target, filled);
      if (kept !== undefined) return kept;
      // rename(2) cannot replace a non-empty folder: move the old one out of the way first.
      if (opts.replace) asides.push(await moveAside(target));
    }
  } finally {
    await rm(tmp, { recursive: true, force: true }); // gone already when the rename succeeded
    for (const aside of asides) await rm(aside, { recursive: true, force: true });
  }
}

/** Renames `path` to a fresh sibling name and returns that name (also when `path` was already gone). */
async function moveAside(path: string): Promise<string> {
  const aside = `${tempSibling(path)}.old`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // someone else moved it: nothing to do
  }
  return aside;
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where `path` really is, whether or not it exists yet: the real path (symbolic links resolved)
 * of its deepest existing ancestor, with the missing rest appended. Two names of one folder
 * (a link and its target, `/tmp` and `/private/tmp`) give the same answer.
 */
export async function realPathOf(path: string): Promise<string> {
  const missing: string[] = [];
  let p = resolve(path);
  for (;;) {
    try {
      return join(await realpath(p), ...missing.reverse());
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const parent = dirname(p);
      // ENOENT: not there yet; ENOTDIR: a file where a folder would be. Either way, look higher.
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === p) throw err;
      missing.push(basename(p));
      p = parent;
    }
  }
}

/** True when `inner` is `outer` or lies below it (absolute, normalised paths; compares text only). */
export function isWithin(outer: string, inner: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** How folder `a` sits relative to folder `b`, by real path: the same, inside it, containing it, or apart (undefined). */
export async function folderOverlap(a: string, b: string): Promise<'same' | 'inside' | 'contains' | undefined> {
  const [ra, rb] = await Promise.all([realPathOf(a), realPathOf(b)]);
  if (ra === rb) return 'same';
  if (isWithin(rb, ra)) return 'inside';
  if (isWithin(ra, rb)) return 'contains';
  return undefined;
}

/**
 * How long one file-system operation outside the artifact store (the report's delivery to the
 * output folder) may take before the stage fails. Writing two small files takes milliseconds
 * even on a slow network disk; a minute without an answer means the path is on a special file
 * system (mkdir under /proc never returns on some kernels and sandboxes) or an unreachable one
 * (a hard-mounted NFS share whose server is gone), where waiting longer does not help.
 */
export const FS_DEADLINE_MS = 60_000;

/**
 * A file-system operation did not finish within its deadline. Not retryable: the call is still
 * stuck, and each stuck call holds one of libuv's threads (4 by default) for the rest of the
 * worker's life, so retrying on the same worker would starve every other stage's file I/O.
 */
export class FsDeadlineError extends Error {
  readonly nonRetryable = true;
  constructor(
    readonly op: string,
    readonly path: string,
    readonly ms: number,
  ) {
    super(`${op} ${path} did not finish within ${formatSeconds(ms)} s: is it a special or unreachable file system?`);
    this.name = 'FsDeadlineError';
  }
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}

/**
 * Runs `fn` (one potentially blocking file operation `op` on `path`) and fails with an
 * FsDeadlineError naming both when it has not settled within `ms`. Node cannot cancel a stuck
 * fs call: the call stays pending in the thread pool (a late result or error is ignored), and
 * the deadline only lets the stage fail and say why instead of hanging, heartbeating, forever.
 */
export async function withFsDeadline<T>(op: string, path: string, fn: () => Promise<T>, ms: number = FS_DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FsDeadlineError(op, path, ms)), ms);
  });
  const work = fn();
  work.catch(() => undefined); // settling after the deadline must not become an unhandled rejection
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A folder that cannot hold files: on a pseudo file system (/proc, /sys, /dev...). Retrying cannot help. */
export class PseudoFileSystemError extends Error {
  readonly nonRetryable = true;
  constructor(
    readonly path: string,
    readonly fsName: string,
  ) {
    super(`${path} is on a pseudo file system (${fsName}), which cannot hold files: choose a folder on a disk`);
    this.name = 'PseudoFileSystemError';
  }
}

/** Kernel file systems that hold no user files, by statfs(2) magic number (Linux). */
const PSEUDO_FS_MAGIC = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x1cd1, 'devpts'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'],
]);
/** By real path as well, for /dev (a devtmpfs reports itself as tmpfs); /dev/shm is an ordinary tmpfs. */
const PSEUDO_ROOTS: readonly { root: string; name: string; except?: string }[] = [
  { root: '/proc', name: 'proc' },
  { root: '/sys', name: 'sysfs' },
  { root: '/dev', name: 'devtmpfs', except: '/dev/shm' },
];

/**
 * The name of the pseudo file system `path` (existing or not) would be created on, or undefined
 * for an ordinary one. Cheap (a realpath and a statfs of its deepest existing ancestor), each
 * under `deadlineMs`: an unreachable mount fails with FsDeadlineError rather than hanging.
 */
export async function pseudoFileSystem(path: string, deadlineMs: number = FS_DEADLINE_MS): Promise<string | undefined> {
  const real = await withFsDeadline('realpath', path, () => realPathOf(path), deadlineMs);
  for (const r of PSEUDO_ROOTS) if (isWithin(r.root, real) && !(r.except && isWithin(r.except, real))) return r.name;
  if (process.platform !== 'linux') return undefined;
  for (let p = real; ; p = dirname(p)) {
    try {
      const fs = await withFsDeadline('statfs', p, () => statfs(p), deadlineMs);
      return PSEUDO_FS_MAGIC.get(Number(fs.type));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(p) === p) throw err;
    }
  }
}
