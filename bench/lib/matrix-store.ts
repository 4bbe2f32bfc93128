// The audits a `bench matrix` run left in its artifact store (.cache/bench-matrix), for the
// benches that study them without training (relabel-rules, feature-layers, separability).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What a stored audit report says that those benches read. */
export interface StoredReport {
  /** The report artifact's key. */
  key: string;
  /** Stage -> artifact key of every stage the audit ran (attack, ingest, encoder, features, density, ...). */
  artifacts: Record<string, string>;
  config?: { seed?: number; features?: { stages?: number[]; flipAverage?: boolean } };
  classes: { name: string; sNDNormalized?: number; sD: number }[];
}

/** Every audit report in the store, in directory order. */
export async function storedReports(store: string): Promise<StoredReport[]> {
  const out: StoredReport[] = [];
  for (const key of await readdir(store)) {
    const meta = await readFile(join(store, key, '.artifact.json'), 'utf8').catch(() => undefined);
    if (!meta || (JSON.parse(meta) as { stage: string }).stage !== 'report') continue;
    const report = JSON.parse(await readFile(join(store, key, 'report.json'), 'utf8')) as Omit<StoredReport, 'key'>;
    out.push({ key, artifacts: report.artifacts, config: report.config, classes: report.classes });
  }
  return out;
}

/**
 * The sha256 of one file of an artifact, as its manifest records it: audits re-keyed after a
 * stage version change can hold byte-identical artifacts under other keys, and count once.
 */
export async function artifactFileHash(store: string, key: string, path: string): Promise<string> {
  const files = (JSON.parse(await readFile(join(store, key, '.artifact.json'), 'utf8')) as { files: { path: string; sha256: string }[] })
    .files;
  return files.find((f) => f.path === path)?.sha256 ?? key;
}
