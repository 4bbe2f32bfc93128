// Small file-system helpers shared by every layer: one way to write a file atomically, one way
// to publish a folder atomically.
import { mkdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
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
