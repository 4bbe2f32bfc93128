// Dataset formats: turn a DatasetSpec into a validated list of samples (id, label, where the
// bytes are) before anything is decoded or written, so that bad input fails early and names
// the offending file.

import type { Stats } from 'node:fs';
import { lstat, readFile, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CIFAR10_CLASSES } from './cifar10.js';
import { DatasetError } from './dataset-error.js';
import { isWithin } from './files.js';
import { inferClasses, manifestRows, resolveLabel } from './manifest.js';

/**
 * `followSymlinksOutsideRoot`: a symbolic link under the dataset root whose target lies outside
 * it is refused unless this is true (links that stay inside the root are always followed).
 */
export type DatasetSpec =
  | { format: 'imagefolder'; root: string; followSymlinksOutsideRoot?: boolean }
  | { format: 'cifar-binary'; files: string[]; classes?: string[] }
  | { format: 'manifest'; path: string; root?: string; classes?: string[]; followSymlinksOutsideRoot?: boolean };

export { DatasetError } from './dataset-error.js';

/** Image file extensions accepted in ImageFolder class folders (lower-case). */
const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp'];

/** CIFAR binary record: 1 label byte + 32x32x3 bytes, channel-major. */
export const CIFAR_SIDE = 32;
export const CIFAR_RECORD_BYTES = 1 + CIFAR_SIDE * CIFAR_SIDE * 3;

/**
 * Where a sample's source bytes are: a whole image file, or one record of a CIFAR binary file.
 * `path` is the file as the dataset names it (messages); `realPath` is where it was found at
 * discovery, every link resolved and checked, and is what gets read.
 */
export type SampleSource =
  { kind: 'file'; path: string; realPath: string } | { kind: 'cifar-record'; path: string; realPath: string; offset: number };

export interface SampleRef {
  /** Stable id: path relative to the dataset root with '/' separators, or `<file>#<n>` for CIFAR binary. */
  id: string;
  label: number;
  source: SampleSource;
}

export interface DiscoveredDataset {
  format: DatasetSpec['format'];
  /** Default dataset name (folder, manifest or first binary file name). */
  name: string;
  classes: string[];
  /** In id order (see compareIds). */
  samples: SampleRef[];
}

/**
 * Total order on sample ids: digit runs compare as numbers, the rest by code point, so
 * `data_batch_1.bin#2` precedes `data_batch_1.bin#10`. Locale-free, hence the same everywhere.
 */
export function compareIds(a: string, b: string): number {
  const ra = a.match(/\d+|\D+/g) ?? [];
  const rb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    const x = ra[i]!;
    const y = rb[i]!;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const nx = x.replace(/^0+/, '');
      const ny = y.replace(/^0+/, '');
      if (nx.length !== ny.length) return nx.length - ny.length;
      if (nx !== ny) return nx < ny ? -1 : 1;
      return x.length - y.length; // '01' vs '1': equal value, shorter first
    }
    return x < y ? -1 : 1;
  }
  if (ra.length !== rb.length) return ra.length - rb.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A folder the dataset's files live in: nothing may be written there. `key` is the spec field that names it. */
export interface DatasetRoot {
  dir: string;
  key: (string | number)[];
}

/**
 * The folders a dataset is read from (absolute, as written): the ImageFolder root; the manifest's
 * root and the manifest's own folder; the folder of each CIFAR binary file.
 */
export function datasetRoots(spec: DatasetSpec): DatasetRoot[] {
  switch (spec.format) {
    case 'imagefolder':
      return [{ dir: resolve(spec.root), key: ['root'] }];
    case 'manifest':
      // With a root, the images live there and the manifest is one file: an output folder beside
      // it (the usual /proj/train.csv + /proj/out) touches neither. Without one, the manifest's
      // folder is where its relative paths point.
      return spec.root === undefined ? [{ dir: dirname(resolve(spec.path)), key: ['path'] }] : [{ dir: resolve(spec.root), key: ['root'] }];
    case 'cifar-binary': {
      const seen = new Set<string>();
      return spec.files.flatMap((f, i) => {
        const dir = dirname(resolve(f));
        if (seen.has(dir)) return [];
        seen.add(dir);
        return [{ dir, key: ['files', i] }];
      });
    }
  }
}

/** Lists and validates the samples of a dataset without decoding any image. */
export async function discoverDataset(spec: DatasetSpec): Promise<DiscoveredDataset> {
  let found: DiscoveredDataset;
  switch (spec.format) {
    case 'imagefolder':
      found = await discoverImageFolder(resolve(spec.root), spec.followSymlinksOutsideRoot === true);
      break;
    case 'cifar-binary':
      found = await discoverCifarBinary(
        spec.files.map((f) => resolve(f)),
        spec.classes,
      );
      break;
    case 'manifest':
      found = await discoverManifest(
        resolve(spec.path),
        spec.root === undefined ? undefined : resolve(spec.root),
        spec.classes,
        spec.followSymlinksOutsideRoot === true,
      );
      break;
    default: {
      const bad: { format?: unknown } = spec;
      throw new Error(`unknown dataset format ${JSON.stringify(bad.format)}; use imagefolder, cifar-binary or manifest`);
    }
  }
  found.samples.sort((a, b) => compareIds(a.id, b.id));
  return found;
}

function toId(root: string, path: string): string {
  return relative(root, path).split(sep).join('/');
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Symbolic links under a dataset root. Each link is resolved where it is met; one whose target
 * leaves the root is refused unless the source opts in, since a link such as `x.jpg ->
 * /etc/passwd` would otherwise be read, hashed and written into the artifacts as a sample.
 */
interface LinkPolicy {
  /** The root as given (messages) and its real path (comparisons). */
  root: string;
  realRoot: string;
  followOutside: boolean;
}

/** The real path of `link` (a symbolic link under the root), after checking where it leads. */
async function followLink(link: string, policy: LinkPolicy): Promise<string> {
  const target = await readlink(link).catch(() => '?');
  let real: string;
  try {
    real = await realpath(link);
  } catch (err) {
    throw new DatasetError(link, `broken symbolic link to ${target} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`);
  }
  if (!policy.followOutside && !isWithin(policy.realRoot, real)) throw linkOutsideRoot(link, target, real, policy, '');
  return real;
}

function linkOutsideRoot(link: string, target: string, real: string, policy: LinkPolicy, where: string): DatasetError {
  return new DatasetError(
    link,
    `symbolic link to ${target}${real !== resolve(dirname(link), target) ? ` (${real})` : ''}, outside the dataset root ${policy.root}${where}; ` +
      `only files inside the dataset are read: copy the file into the dataset, or set followSymlinksOutsideRoot: true on the dataset source`,
  );
}

// ImageFolder: root/<class>/**/<image>. Class = first-level folder, classes sorted by code
// point (the torchvision convention). Hidden entries (.DS_Store, .git) are skipped; any other
// non-image file is an error rather than silently ignored, since it usually means a mistake
// in the layout.
async function discoverImageFolder(root: string, followOutside: boolean): Promise<DiscoveredDataset> {
  if (!(await isDirectory(root))) {
    throw new DatasetError(root, 'ImageFolder root is not a folder (expected root/<class>/<image>)');
  }
  const policy: LinkPolicy = { root, realRoot: await realpath(root), followOutside };
  const entries = await readdir(root, { withFileTypes: true });
  const classes: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory() || (e.isSymbolicLink() && (await isDirectory(join(root, e.name))))) classes.push(e.name);
    // Plain files at the top level (README, LICENSE) are not samples; they are left alone.
  }
  classes.sort();
  if (classes.length === 0) {
    throw new DatasetError(root, 'no class folders found (expected root/<class>/<image>)');
  }
  const samples: SampleRef[] = [];
  for (let label = 0; label < classes.length; label++) {
    const classDir = join(root, classes[label]!);
    const isLink = (await lstat(classDir)).isSymbolicLink();
    const realDir = isLink ? await followLink(classDir, policy) : join(policy.realRoot, classes[label]!);
    const files: ListedFile[] = [];
    await listImages(classDir, realDir, policy, [policy.realRoot, realDir], files);
    if (files.length === 0) {
      throw new DatasetError(classDir, 'class folder contains no images; add images or remove the folder');
    }
    for (const f of files) samples.push({ id: toId(root, f.path), label, source: { kind: 'file', path: f.path, realPath: f.realPath } });
  }
  return { format: 'imagefolder', name: basename(root), classes, samples };
}

interface ListedFile {
  path: string;
  realPath: string;
}

/** Appends the images under `dir` (whose real path is `realDir`) to `out`; `open` holds the real folders being listed, to catch link loops. */
async function listImages(dir: string, realDir: string, policy: LinkPolicy, open: string[], out: ListedFile[]): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    // Only a link needs resolving: below a real folder, a plain entry's real path is its name.
    const realPath = e.isSymbolicLink() ? await followLink(path, policy) : `${realDir}${sep}${e.name}`;
    const st = e.isSymbolicLink() ? await stat(realPath) : e;
    if (st.isDirectory()) {
      if (open.includes(realPath)) throw new DatasetError(path, `symbolic link loop: leads back to ${realPath}, which contains it`);
      open.push(realPath);
      await listImages(path, realPath, policy, open, out);
      open.pop();
    } else if (!IMAGE_EXTENSIONS.includes(extname(e.name).toLowerCase())) {
      throw new DatasetError(
        path,
        `not an image (accepted: ${IMAGE_EXTENSIONS.join(' ')}); move it out of the class folder, ` +
          `or list the images to use in a CSV/JSONL manifest (format 'manifest')`,
      );
    } else if (!st.isFile()) {
      throw new DatasetError(path, 'not a regular file (a pipe, socket or device cannot be a sample)');
    } else {
      out.push({ path, realPath });
    }
  }
}

// CIFAR binary batches: fixed-size records, label byte first. Ids are `<file name>#<n>`.
async function discoverCifarBinary(files: string[], classes: string[] | undefined): Promise<DiscoveredDataset> {
  if (files.length === 0) throw new Error('cifar-binary dataset spec lists no files');
  const names = classes ?? [...CIFAR10_CLASSES];
  const samples: SampleRef[] = [];
  const seen = new Set<string>();
  for (const path of files) {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      throw new DatasetError(path, 'file not found');
    }
    if (size === 0 || size % CIFAR_RECORD_BYTES !== 0) {
      throw new DatasetError(
        path,
        `size ${size} bytes is not a positive multiple of the ${CIFAR_RECORD_BYTES}-byte CIFAR-10 record ` +
          `(1 label byte + 3072 pixel bytes); is it a CIFAR-10 binary batch?`,
      );
    }
    const name = basename(path);
    if (seen.has(name)) throw new DatasetError(path, `two binary files share the name ${name}; sample ids would collide`);
    seen.add(name);
    const realPath = await realpath(path);
    const data = await readFile(realPath);
    for (let n = 0; n < size / CIFAR_RECORD_BYTES; n++) {
      const label = data[n * CIFAR_RECORD_BYTES]!;
      if (label >= names.length) {
        throw new DatasetError(path, `record ${n} has label ${label}, outside the ${names.length} classes`);
      }
      samples.push({ id: `${name}#${n}`, label, source: { kind: 'cifar-record', path, realPath, offset: n * CIFAR_RECORD_BYTES } });
    }
  }
  return { format: 'cifar-binary', name: basename(files[0]!).replace(/\.bin$/, ''), classes: names, samples };
}

// Manifest: .csv with a header naming `path` and `label` columns, or .jsonl with one
// {"path", "label"} object per line. Paths are relative to `root` (default: the manifest's
// folder) and may not leave it, neither as written nor through a symbolic link; a label is a
// class name or a class index.
async function discoverManifest(
  manifest: string,
  rootArg: string | undefined,
  classesArg: string[] | undefined,
  followOutside: boolean,
): Promise<DiscoveredDataset> {
  let text: string;
  try {
    text = await readFile(manifest, 'utf8');
  } catch {
    throw new DatasetError(manifest, 'manifest file not found');
  }
  const rows = manifestRows(manifest, text);

  const root = rootArg ?? dirname(manifest);
  let realRoot: string;
  try {
    realRoot = await realpath(root);
  } catch {
    throw new DatasetError(root, `dataset root of ${manifest} not found`);
  }
  const policy: LinkPolicy = { root, realRoot, followOutside };
  const classes = classesArg ?? inferClasses(manifest, rows);
  const samples: SampleRef[] = [];
  const seen = new Map<string, number>();
  const realDirs = new Map<string, string>();
  for (const row of rows) {
    const where = `line ${row.line}`;
    const path = isAbsolute(row.path) ? resolve(row.path) : resolve(root, row.path);
    const rel = relative(root, path);
    if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
      throw new DatasetError(manifest, `${where}: path ${JSON.stringify(row.path)} is outside the dataset root ${root}`);
    }
    const label = resolveLabel(manifest, where, row.label, classes);
    const id = toId(root, path);
    const previous = seen.get(id);
    if (previous !== undefined) throw new DatasetError(manifest, `${where}: ${id} is already listed on line ${previous}`);
    seen.set(id, row.line);
    let st: Stats;
    try {
      st = await lstat(path);
    } catch {
      throw new DatasetError(path, `file not found (listed in ${manifest}, ${where})`);
    }
    let realPath: string;
    if (st.isSymbolicLink()) {
      try {
        realPath = await realpath(path);
        st = await stat(realPath);
      } catch {
        const target = await readlink(path).catch(() => '?');
        throw new DatasetError(path, `broken symbolic link to ${target} (listed in ${manifest}, ${where})`);
      }
    } else {
      // One realpath per folder, not per file: a plain file's real path is its folder's plus its name.
      const dir = dirname(path);
      let realDir = realDirs.get(dir);
      if (realDir === undefined) realDirs.set(dir, (realDir = await realpath(dir)));
      realPath = `${realDir}${sep}${basename(path)}`;
    }
    if (!st.isFile()) throw new DatasetError(path, `not a file (listed in ${manifest}, ${where})`);
    if (!followOutside && !isWithin(realRoot, realPath)) {
      // The text stays inside the root (checked above), so a link on the way leads out: name it.
      const link = (await escapingLink(rel, policy)) ?? { path, realPath };
      const target = await readlink(link.path).catch(() => link.realPath);
      throw linkOutsideRoot(link.path, target, link.realPath, policy, ` (listed in ${manifest}, ${where})`);
    }
    samples.push({ id, label, source: { kind: 'file', path, realPath } });
  }
  return { format: 'manifest', name: basename(manifest, extname(manifest)), classes, samples };
}

/** The first symbolic link on the way from the root along `rel` whose target lies outside the root. */
async function escapingLink(rel: string, policy: LinkPolicy): Promise<ListedFile | undefined> {
  let path = policy.root;
  for (const part of rel.split(sep)) {
    path = join(path, part);
    if (!(await lstat(path)).isSymbolicLink()) continue;
    const realPath = await realpath(path);
    if (!isWithin(policy.realRoot, realPath)) return { path, realPath };
  }
  return undefined;
}
