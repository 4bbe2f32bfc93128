// Content-addressed artifact store: every stage output lives in a folder named by its cache
// key, published atomically with a manifest of file hashes, and verified before reuse. The
// Temporal layer passes ArtifactRefs around; the bytes stay here.
//
// Layout under root:
//   <key>/...files...        a published artifact
//   <key>/.artifact.json     its manifest (written last, inside the temp folder, before the rename)
//   .tmp/<key>.tmp-<random>/ artifacts being written (a crash leaves them here; sweep() removes them)
//   .quarantine/<key>-<random>/  artifacts that failed verification, kept for inspection

import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { canonicalJson, sha256File, sha256Hex } from './hash.js';
import { pathExists, publishDir } from './files.js';

export interface ArtifactRef {
  stage: string;
  key: string;
  /** sha256 of the artifact's manifest file, which lists every file's sha256. */
  sha256: string;
  /** Total bytes of the artifact's files. */
  bytes: number;
}

export interface ArtifactFile {
  /** Path relative to the artifact folder, '/' separated. */
  path: string;
  sha256: string;
  bytes: number;
}

interface ArtifactManifest {
  version: 1;
  stage: string;
  key: string;
  /** Sorted by path. */
  files: ArtifactFile[];
}

export const ARTIFACT_MANIFEST = '.artifact.json';
const TMP = '.tmp';
const QUARANTINE = '.quarantine';
const KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/**
 * Cache key of a stage: sha256 of (stage, implementation version, parameters, input artifact
 * keys). Parameter key order does not matter; input order does (inputs are positional).
 */
export function cacheKey(stage: string, version: string | number, params: unknown, inputKeys: string[]): string {
  return sha256Hex(canonicalJson({ stage, version, params, inputs: inputKeys }));
}

export class ArtifactStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  /** Folder of an artifact, by ref or key. */
  dir(ref: ArtifactRef | string): string {
    const key = typeof ref === 'string' ? ref : ref.key;
    checkKey(key);
    return join(this.root, key);
  }

  /**
   * The published artifact for (stage, key), after checking every file against its manifest.
   * A corrupted or partial artifact is moved to .quarantine/ and reported as absent, so the
   * stage simply runs again.
   */
  async lookup(stage: string, key: string): Promise<ArtifactRef | undefined> {
    const dir = this.dir(key);
    let text: string;
    try {
      text = await readFile(join(dir, ARTIFACT_MANIFEST), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (await pathExists(dir)) await this.quarantine(key); // folder without manifest: never published properly
      return undefined;
    }
    const manifest = parseArtifactManifest(text);
    if (manifest && manifest.key === key && manifest.stage !== stage) {
      throw new Error(
        `${dir}: artifact key ${key} belongs to stage '${manifest.stage}', not '${stage}'; cache keys must include the stage`,
      );
    }
    if (!manifest || manifest.key !== key || !(await filesMatch(dir, manifest))) {
      await this.quarantine(key);
      return undefined;
    }
    return { stage, key, sha256: sha256Hex(text), bytes: totalBytes(manifest) };
  }

  /**
   * Runs write(tmpDir), hashes what it wrote, writes the manifest last and renames the folder
   * into place. If write throws, nothing becomes visible. If another publisher of the same key
   * got there first, its (verified) artifact is returned and this one is discarded.
   */
  async publish(stage: string, key: string, write: (tmpDir: string) => Promise<void>): Promise<ArtifactRef> {
    const dir = this.dir(key);
    if (stage === '') throw new Error('artifact stage name is empty');
    return publishDir(
      dir,
      async (tmp) => {
        await write(tmp);
        const paths = await listFiles(tmp, '');
        if (paths.includes(ARTIFACT_MANIFEST))
          throw new Error(`${tmp}: stage '${stage}' wrote ${ARTIFACT_MANIFEST}, a name reserved for the artifact manifest`);
        const files: ArtifactFile[] = [];
        for (const path of paths.sort()) files.push({ path, ...(await sha256File(join(tmp, path))) });
        const manifest: ArtifactManifest = { version: 1, stage, key, files };
        const text = JSON.stringify(manifest, null, 1) + '\n';
        await writeFile(join(tmp, ARTIFACT_MANIFEST), text);
        return { stage, key, sha256: sha256Hex(text), bytes: totalBytes(manifest) };
      },
      {
        // Someone published this key first: keep theirs if it verifies; if not, lookup has
        // quarantined it and the rename is tried again (never moved aside: it may be a fresh
        // artifact another writer has just returned).
        keepExisting: () => this.lookup(stage, key),
        replace: false,
        // Under the root, not beside the artifact: sweep() finds what crashed publishers left.
        tmpParent: join(this.root, TMP),
      },
    );
  }

  /** True when the artifact's manifest is the one the ref names and every file matches it. */
  async verify(ref: ArtifactRef): Promise<boolean> {
    const dir = this.dir(ref);
    let text: string;
    try {
      text = await readFile(join(dir, ARTIFACT_MANIFEST), 'utf8');
    } catch {
      return false;
    }
    if (sha256Hex(text) !== ref.sha256) return false;
    const manifest = parseArtifactManifest(text);
    if (!manifest || manifest.key !== ref.key || manifest.stage !== ref.stage || totalBytes(manifest) !== ref.bytes) return false;
    return filesMatch(dir, manifest);
  }

  /** Whether a copy of `key` was moved to .quarantine/: it was here and failed verification. */
  async quarantined(key: string): Promise<boolean> {
    checkKey(key);
    const names = await readdir(join(this.root, QUARANTINE)).catch(() => [] as string[]);
    return names.some((n) => n.startsWith(`${key}-`) && n.length === key.length + 13); // <key>-<12 hex>
  }

  /** Files of a published artifact, as listed in its manifest (not re-verified). */
  async files(ref: ArtifactRef): Promise<ArtifactFile[]> {
    const file = join(this.dir(ref), ARTIFACT_MANIFEST);
    const manifest = parseArtifactManifest(await readFile(file, 'utf8'));
    if (!manifest) throw new Error(`${file}: invalid artifact manifest`);
    return manifest.files;
  }

  /** Removes temporary folders older than maxAgeMs, left behind by crashed publishers. */
  async sweep(maxAgeMs: number = 24 * 3600 * 1000): Promise<number> {
    const tmpRoot = join(this.root, TMP);
    let names: string[];
    try {
      names = await readdir(tmpRoot);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names) {
      const path = join(tmpRoot, name);
      const st = await stat(path).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > maxAgeMs) {
        await rm(path, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  private async quarantine(key: string): Promise<void> {
    const q = join(this.root, QUARANTINE);
    await mkdir(q, { recursive: true });
    try {
      await rename(this.dir(key), join(q, `${key}-${randomBytes(6).toString('hex')}`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // already moved by a concurrent lookup
    }
  }
}

function checkKey(key: string): void {
  if (!KEY_PATTERN.test(key))
    throw new Error(`invalid artifact key ${JSON.stringify(key)}: use letters, digits, '.', '_', '-' (at most 200)`);
}

function totalBytes(m: ArtifactManifest): number {
  return m.files.reduce((s, f) => s + f.bytes, 0);
}

function parseArtifactManifest(text: string): ArtifactManifest | undefined {
  try {
    const m = JSON.parse(text) as Partial<ArtifactManifest>;
    const ok =
      m.version === 1 &&
      typeof m.stage === 'string' &&
      typeof m.key === 'string' &&
      Array.isArray(m.files) &&
      m.files.every((f) => typeof f.path === 'string' && typeof f.sha256 === 'string' && Number.isInteger(f.bytes));
    return ok ? (m as ArtifactManifest) : undefined;
  } catch {
    return undefined;
  }
}

/** Every listed file present with its hash and size, and no unlisted file. */
async function filesMatch(dir: string, manifest: ArtifactManifest): Promise<boolean> {
  let present: string[];
  try {
    present = (await listFiles(dir, '')).filter((p) => p !== ARTIFACT_MANIFEST).sort();
  } catch {
    return false;
  }
  const listed = manifest.files.map((f) => f.path).sort();
  if (present.length !== listed.length || present.some((p, i) => p !== listed[i])) return false;
  for (const f of manifest.files) {
    const actual = await sha256File(join(dir, f.path)).catch(() => undefined);
    if (!actual || actual.sha256 !== f.sha256 || actual.bytes !== f.bytes) return false;
  }
  return true;
}

/** Regular files under dir, relative '/'-separated paths. Links are refused: an artifact must own its bytes. */
async function listFiles(dir: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(join(dir, prefix))) {
    const rel = prefix === '' ? name : `${prefix}/${name}`;
    const st = await lstat(join(dir, rel));
    if (st.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (st.isFile()) out.push(rel);
    else throw new Error(`${join(dir, rel)}: artifacts may hold only regular files and folders`);
  }
  return out;
}
