// Cheap identities of inputs that live outside the artifact store: a dataset on disk (every
// sample file's path, where its links lead, size and modification time) and a pretrained model
// folder. They enter the ingest / encoder cache keys and the workflow id, so an edited dataset
// is never served from cache and the same dataset is recognised without reading every image.
import { readdir, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { cifar10Fingerprint } from './cifar10.js';
import { discoverDataset } from './formats.js';
import { sha256Hex } from './hash.js';
import type { DatasetSource } from './sources.js';

/** sha256 over (sample id, label, file and its real path, size, mtime) of every sample, in id order. */
export async function datasetFingerprint(source: DatasetSource): Promise<string> {
  // The copy read (shared archive, bundled subset, binary archive) is part of it; no extraction.
  if (source.format === 'cifar10') return cifar10Fingerprint(source.split);
  const found = await discoverDataset(source);
  const lines: string[] = [found.format, found.classes.join('/')];
  const seen = new Map<string, string>();
  for (const s of found.samples) {
    let fileId = seen.get(s.source.path);
    if (fileId === undefined) {
      const st = await stat(s.source.path);
      fileId = `${st.size}:${Math.trunc(st.mtimeMs)}`;
      seen.set(s.source.path, fileId);
    }
    const offset = s.source.kind === 'cifar-record' ? `#${s.source.offset}` : '';
    // Where a link leads is part of the identity (a retargeted link is another sample). Reached
    // through no link, the line is what it always was, so existing fingerprints stay valid.
    const real = s.source.realPath !== s.source.path ? ` -> ${s.source.realPath}` : '';
    lines.push(`${s.id}\t${s.label}\t${s.source.path}${offset}${real}\t${fileId}`);
  }
  if (source.format === 'manifest') {
    const st = await stat(resolve(source.path));
    lines.push(`manifest\t${st.size}:${Math.trunc(st.mtimeMs)}`);
  }
  return sha256Hex(lines.join('\n'));
}

/** sha256 over the relative path, size and mtime of every file under `dir`. */
export async function folderFingerprint(dir: string): Promise<string> {
  const root = resolve(dir);
  const lines: string[] = [];
  async function walk(d: string): Promise<void> {
    const entries = await readdir(d, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await stat(p);
        lines.push(`${relative(root, p)}\t${st.size}:${Math.trunc(st.mtimeMs)}`);
      }
    }
  }
  await walk(root);
  return sha256Hex(lines.join('\n'));
}
