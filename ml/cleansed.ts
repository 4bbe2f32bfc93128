// The cleansed manifest (cleansed.jsonl) and the report (report.json): deriving the
// retraining labels and counts from it, and writing both atomically.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FS_DEADLINE_MS, PseudoFileSystemError, pseudoFileSystem, withFsDeadline, writeFileAtomic } from '../data/files.js';
import type { AuditConfig } from './config.js';
import type { AuditReport, AuditRunInfo, ClassReport, CleansedEntry, Evaluation, SampleAction, SampleSide } from './audit-report.js';
import type { BackendName } from '../backend/backend.js';
import type { PoisonTruth } from '../data/types.js';
import type { ClassDetection } from './detect.js';
import { classSplits, classTests, nearMisses } from './verdict.js';

/** The sides each action may carry (see SampleSide): what is kept is clean, what is relabelled
 *  is poisoned, what is dropped is either the poisoned side or the undecided part. */
const SIDES_OF_ACTION: Readonly<Record<SampleAction, readonly SampleSide[]>> = {
  keep: ['clean'],
  relabel: ['poisoned'],
  drop: ['poisoned', 'uncertain'],
};

/**
 * Throws unless `cleansed` is a well-formed split of the samples (`ids`, `labels`, `classes`
 * classes): one entry per sample in input order, its own label, a new label (another class)
 * exactly when relabelled, and a side allowed for its action. Every defense's output passes
 * through this, so retraining and evaluation can trust any of them. `who` names the producer.
 */
export function checkCleansed(
  who: string,
  cleansed: readonly CleansedEntry[],
  ids: readonly string[],
  labels: Int32Array,
  classes: number,
): void {
  if (cleansed.length !== ids.length) throw new Error(`${who}: ${cleansed.length} cleansed entries for ${ids.length} samples`);
  cleansed.forEach((e, i) => {
    const at = `${who}: entry ${i} (${e?.id})`;
    if (!e || e.id !== ids[i]) throw new Error(`${at}: expected sample ${ids[i]} (entries must be in input order)`);
    if (e.label !== labels[i]) throw new Error(`${at}: label ${e.label}, but the sample is labelled ${labels[i]}`);
    const sides = SIDES_OF_ACTION[e.action];
    if (!sides) throw new Error(`${at}: unknown action ${JSON.stringify(e.action)}`);
    if (!sides.includes(e.side)) {
      throw new Error(`${at}: side ${JSON.stringify(e.side)} with action '${e.action}' (allowed: ${sides.join(', ')})`);
    }
    if (e.action === 'relabel') {
      const to = e.newLabel;
      if (to === undefined || !Number.isInteger(to) || to < 0 || to >= classes || to === e.label) {
        throw new Error(`${at}: relabelled to ${to}, which is not another class of 0..${classes - 1}`);
      }
    } else if (e.newLabel !== undefined) {
      throw new Error(`${at}: newLabel ${e.newLabel} on a '${e.action}' entry`);
    }
  });
}

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

/** Writes report.json, cleansed.jsonl and (when given) report.html into `dir` (created if needed). */
export async function writeAuditOutputs(
  dir: string,
  report: AuditReport,
  cleansed: readonly CleansedEntry[],
  opts: { deadlineMs?: number; html?: string } = {},
): Promise<void> {
  // Every step under a deadline (FS_DEADLINE_MS): the output folder may be anywhere, and a
  // special or unreachable file system would otherwise hang the report stage for ever. A folder
  // on /proc, /sys or /dev is refused before anything is tried there.
  const ms = opts.deadlineMs ?? FS_DEADLINE_MS;
  const pseudo = await pseudoFileSystem(dir, ms);
  if (pseudo) throw new PseudoFileSystemError(dir, pseudo);
  await withFsDeadline('mkdir', dir, () => mkdir(dir, { recursive: true }), ms);
  const write = (file: string, text: string) => withFsDeadline('write', file, () => writeFileAtomic(file, text), ms);
  await write(join(dir, 'cleansed.jsonl'), cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
  if (opts.html !== undefined) await write(join(dir, 'report.html'), opts.html);
  // The report last: its presence means the other files are complete.
  await write(join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
}

/** Everything report.json says, assembled in one place for the library and the pipeline. */
export function buildReport(r: {
  dataset: { name: string; hash: string; samples: number; classes: readonly string[] };
  backend: BackendName;
  config: AuditConfig;
  detections: readonly ClassDetection[];
  cleansed: readonly CleansedEntry[];
  timings: Record<string, number>;
  evaluation?: Evaluation;
  warnings?: readonly string[];
  /** Ground truth of an attacked set: the split's cost per class is then counted. */
  truth?: PoisonTruth;
  cachedStages?: readonly string[];
  artifacts?: Record<string, string>;
  run?: AuditRunInfo;
}): AuditReport {
  const names = r.dataset.classes;
  const splits = classSplits(r.cleansed, names.length, r.truth);
  const tests = r.detections.map((d) => classTests(d, r.config.detection));
  const classes: ClassReport[] = r.detections.map((d, k) => ({
    index: d.index,
    name: names[d.index] ?? String(d.index),
    count: d.count,
    sND: d.sND,
    foreignRank: d.foreignRank,
    sNDNormalized: d.sNDNormalized,
    sD: d.sD,
    flagged: d.kind !== 'clean',
    kind: d.kind,
    tests: tests[k],
    split: splits[d.index],
  }));
  return {
    dataset: { ...r.dataset, classes: [...names] },
    backend: r.backend,
    config: r.config,
    classes,
    targetClasses: classes.filter((c) => c.flagged).map((c) => c.index),
    counts: countActions(r.cleansed),
    timings: r.timings,
    ...(r.evaluation && Object.keys(r.evaluation).length ? { evaluation: r.evaluation } : {}),
    ...(r.warnings?.length ? { warnings: [...r.warnings] } : {}),
    nearMisses: nearMisses(tests).map((m) => ({ ...m, index: r.detections[m.index].index, name: classes[m.index].name })),
    ...(r.cachedStages ? { cachedStages: [...r.cachedStages] } : {}),
    ...(r.artifacts ? { artifacts: { ...r.artifacts } } : {}),
    ...(r.run ? { run: { ...r.run } } : {}),
  };
}
