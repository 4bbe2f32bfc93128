// The cleansed manifest (cleansed.jsonl) and the report (report.json): deriving the
// retraining labels and counts from it, and writing both atomically.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditReport, CleansedEntry } from './config.js';

/** Label each sample is retrained with: its new label, its own label, or -1 when dropped. */
export function trainingLabels(cleansed: readonly CleansedEntry[]): Int32Array {
  const out = new Int32Array(cleansed.length);
  cleansed.forEach((e, i) => {
    out[i] = e.action === 'drop' ? -1 : e.action === 'relabel' ? (e.newLabel as number) : e.label;
  });
  return out;
}

export function countActions(cleansed: readonly CleansedEntry[]): AuditReport['counts'] {
  const counts = { kept: 0, relabelled: 0, dropped: 0 };
  for (const e of cleansed) {
    if (e.action === 'keep') counts.kept++;
    else if (e.action === 'relabel') counts.relabelled++;
    else counts.dropped++;
  }
  return counts;
}

/** Writes `text` to `file` through a temporary file and a rename, so readers never see half of it. */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

/** Writes report.json and cleansed.jsonl into `dir` (created if needed). */
export async function writeAuditOutputs(dir: string, report: AuditReport, cleansed: readonly CleansedEntry[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, 'cleansed.jsonl'), cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
  // The report last: its presence means both files are complete.
  await writeFileAtomic(join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
}
