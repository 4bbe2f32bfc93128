// What changed between two audits, from their outputs alone (report.json + cleansed.jsonl): the
// samples added and removed, the classes whose verdict changed and by which test, the samples
// newly relabelled, newly dropped or restored, and how each class's S_ND / S_D moved. Pure but
// for `readAuditOutputs`: the CLI (`backdoor-audit diff`) diffs two output folders, the report
// stage diffs the previous outputs of its folder against what it holds (`sinceLastAudit`).
//
// Samples are matched by id (the path inside the dataset root, or `<file>#<n>`). Neither file
// carries a sample's content hash, so a file replaced in place under the same id is not seen as
// changed unless the caller passes `hashes` (id -> sha256, e.g. from the ingest artifact's index)
// for both audits. A label changed under the same id is seen (cleansed.jsonl has the label).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClassKind, ClassReport, CleansedEntry, SampleAction, SampleSide, SinceLastAudit } from '../ml/audit-report.js';

/** The part of report.json the diff reads; older and newer reports both have it. JSON turns NaN into null. */
export interface DiffableReport {
  dataset: { name: string; hash: string; samples: number; classes: readonly string[] };
  config?: Record<string, unknown> | object;
  classes: readonly DiffableClass[];
  targetClasses: readonly number[];
  counts: { kept: number; relabelled: number; dropped: number };
}

export type DiffableClass = Pick<ClassReport, 'index' | 'name' | 'count' | 'flagged' | 'kind'> & {
  sND: number | null;
  sNDNormalized: number | null;
  sD: number | null;
};

/** One audit's outputs, as the diff takes them. */
export interface AuditOutputs {
  report: DiffableReport;
  cleansed: readonly Pick<CleansedEntry, 'id' | 'label' | 'action' | 'side' | 'newLabel'>[];
  /** Per-sample content hash (sha256) by id, when known; with both sides' hashes, changed samples are found too. */
  hashes?: ReadonlyMap<string, string>;
}

/** What the audit did with one sample. */
export interface SampleOutcome {
  action: SampleAction;
  side: SampleSide;
  /** Class name of the new label, when relabelled. */
  newLabel?: string;
}

export interface SampleChange {
  id: string;
  /** Class name of the sample's label in the newer audit. */
  label: string;
  /** Absent for a sample the older audit did not have. */
  before?: SampleOutcome;
  after: SampleOutcome;
}

export interface StatMove {
  before: number | null;
  after: number | null;
  /** after - before; null when either is missing (an empty class's statistic is NaN, null in JSON). */
  delta: number | null;
}

export interface ClassDiff {
  name: string;
  /** 'added' / 'removed': the class is in one audit only. */
  verdict: 'unchanged' | 'flagged' | 'unflagged' | 'kind-changed' | 'added' | 'removed';
  kindBefore?: ClassKind;
  kindAfter?: ClassKind;
  count: StatMove;
  sND: StatMove;
  sNDNormalized: StatMove;
  sD: StatMove;
}

export interface AuditSummaryLine {
  datasetName: string;
  datasetHash: string;
  samples: number;
  /** Names of the flagged classes. */
  targetClasses: string[];
  counts: { kept: number; relabelled: number; dropped: number };
}

export interface AuditDiff {
  before: AuditSummaryLine;
  after: AuditSummaryLine;
  /** 'id': matched by id only (no content hashes given); 'id+hash': changed content under the same id is found too. */
  matchedBy: 'id' | 'id+hash';
  samples: {
    added: string[];
    removed: string[];
    /** In both, content hash differs; always empty when matchedBy is 'id'. */
    changed: string[];
    /** In both with another label (the dataset's label changed, not the audit's relabelling). */
    labelChanged: { id: string; before: string; after: string }[];
    /** How many ids are in both audits. */
    common: number;
  };
  /** Classes whose verdict changed (flagged, unflagged, or flagged by the other test), and classes in one audit only. */
  verdictChanges: ClassDiff[];
  /** Every class of either audit, with how its statistics moved (after - before). */
  classes: ClassDiff[];
  /** Relabelled now and not before (samples new in this audit included: `before` absent). */
  newlyRelabelled: SampleChange[];
  /** Dropped now and not before (new samples included). */
  newlyDropped: SampleChange[];
  /** Kept now, relabelled or dropped before. */
  restored: SampleChange[];
  /** Relabelled in both, to another class now. */
  relabelledElsewhere: SampleChange[];
  /** Top-level config keys (encoder, flow, detection, ...) whose values differ. */
  configChanged: string[];
}

/** Parses report.json and cleansed.jsonl text; `where` names them in errors. */
export function parseAuditOutputs(reportJson: string, cleansedJsonl: string, where = 'audit'): AuditOutputs {
  let report: DiffableReport;
  try {
    report = JSON.parse(reportJson) as DiffableReport;
  } catch (err) {
    throw new Error(`${where}/report.json: invalid JSON (${(err as Error).message})`);
  }
  if (!report?.dataset || !Array.isArray(report.classes) || !Array.isArray(report.dataset.classes)) {
    throw new Error(`${where}/report.json: not an audit report (no dataset or classes)`);
  }
  const cleansed: AuditOutputs['cleansed'][number][] = [];
  cleansedJsonl.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let e: CleansedEntry;
    try {
      e = JSON.parse(line) as CleansedEntry;
    } catch (err) {
      throw new Error(`${where}/cleansed.jsonl line ${i + 1}: invalid JSON (${(err as Error).message})`);
    }
    if (typeof e?.id !== 'string' || typeof e.label !== 'number' || typeof e.action !== 'string') {
      throw new Error(`${where}/cleansed.jsonl line ${i + 1}: expected {"id", "label", "action", ...}`);
    }
    cleansed.push(e);
  });
  return { report, cleansed };
}

function summaryLine(r: DiffableReport): AuditSummaryLine {
  return {
    datasetName: r.dataset.name,
    datasetHash: r.dataset.hash,
    samples: r.dataset.samples,
    targetClasses: r.targetClasses.map((y) => r.dataset.classes[y] ?? String(y)),
    counts: { ...r.counts },
  };
}

const num = (v: number | null | undefined): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function move(before: number | null | undefined, after: number | null | undefined): StatMove {
  const b = num(before);
  const a = num(after);
  return { before: b, after: a, delta: a !== null && b !== null ? a - b : null };
}

function classDiff(name: string, b: DiffableClass | undefined, a: DiffableClass | undefined): ClassDiff {
  const verdict: ClassDiff['verdict'] = !b
    ? 'added'
    : !a
      ? 'removed'
      : b.flagged !== a.flagged
        ? a.flagged
          ? 'flagged'
          : 'unflagged'
        : b.kind !== a.kind
          ? 'kind-changed'
          : 'unchanged';
  return {
    name,
    verdict,
    ...(b ? { kindBefore: b.kind } : {}),
    ...(a ? { kindAfter: a.kind } : {}),
    count: move(b?.count, a?.count),
    sND: move(b?.sND, a?.sND),
    sNDNormalized: move(b?.sNDNormalized, a?.sNDNormalized),
    sD: move(b?.sD, a?.sD),
  };
}

/** Stable JSON (sorted keys), to compare config values whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'undefined';
}

function configChanges(b: object | undefined, a: object | undefined): string[] {
  const bc = (b ?? {}) as Record<string, unknown>;
  const ac = (a ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(bc), ...Object.keys(ac)])].filter((k) => canonical(bc[k]) !== canonical(ac[k])).sort();
}

/** Compares audit `before` (e.g. last night's) with audit `after`. */
export function diffAudits(before: AuditOutputs, after: AuditOutputs): AuditDiff {
  const rb = before.report;
  const ra = after.report;
  const nameB = (y: number) => rb.dataset.classes[y] ?? String(y);
  const nameA = (y: number) => ra.dataset.classes[y] ?? String(y);
  const outcome = (e: AuditOutputs['cleansed'][number], name: (y: number) => string): SampleOutcome => ({
    action: e.action,
    side: e.side,
    ...(e.action === 'relabel' && e.newLabel !== undefined ? { newLabel: name(e.newLabel) } : {}),
  });

  const byIdB = new Map(before.cleansed.map((e) => [e.id, e]));
  const idsA = new Set(after.cleansed.map((e) => e.id));
  const matchedBy = before.hashes && after.hashes ? 'id+hash' : 'id';
  const added: string[] = [];
  const changed: string[] = [];
  const labelChanged: AuditDiff['samples']['labelChanged'] = [];
  const newlyRelabelled: SampleChange[] = [];
  const newlyDropped: SampleChange[] = [];
  const restored: SampleChange[] = [];
  const relabelledElsewhere: SampleChange[] = [];
  let common = 0;

  for (const e of after.cleansed) {
    const prev = byIdB.get(e.id);
    const now = outcome(e, nameA);
    const change = (): SampleChange => ({ id: e.id, label: nameA(e.label), ...(prev ? { before: outcome(prev, nameB) } : {}), after: now });
    if (!prev) added.push(e.id);
    else {
      common++;
      if (matchedBy === 'id+hash' && before.hashes?.get(e.id) !== after.hashes?.get(e.id)) changed.push(e.id);
      // Labels compared by class name: a class added to the list shifts the indices.
      if (nameB(prev.label) !== nameA(e.label)) labelChanged.push({ id: e.id, before: nameB(prev.label), after: nameA(e.label) });
    }
    const was = prev?.action;
    if (e.action === 'relabel' && was !== 'relabel') newlyRelabelled.push(change());
    else if (e.action === 'drop' && was !== 'drop') newlyDropped.push(change());
    else if (e.action === 'keep' && prev && was !== 'keep') restored.push(change());
    else if (e.action === 'relabel' && prev && outcome(prev, nameB).newLabel !== now.newLabel) relabelledElsewhere.push(change());
  }
  const removed = before.cleansed.filter((e) => !idsA.has(e.id)).map((e) => e.id);

  // Classes matched by name, in the newer audit's order, then those only the older one has.
  const classB = new Map(rb.classes.map((c) => [c.name, c]));
  const classA = new Map(ra.classes.map((c) => [c.name, c]));
  const names = [...ra.classes.map((c) => c.name), ...rb.classes.map((c) => c.name).filter((n) => !classA.has(n))];
  const classes = names.map((n) => classDiff(n, classB.get(n), classA.get(n)));

  return {
    before: summaryLine(rb),
    after: summaryLine(ra),
    matchedBy,
    samples: { added, removed, changed, labelChanged, common },
    verdictChanges: classes.filter((c) => c.verdict !== 'unchanged'),
    classes,
    newlyRelabelled,
    newlyDropped,
    restored,
    relabelledElsewhere,
    configChanged: configChanges(rb.config, ra.config),
  };
}

/** Reads report.json + cleansed.jsonl of an output folder; `name` names them in errors. */
export async function readAuditOutputs(dir: string, name: string = dir): Promise<AuditOutputs> {
  const [report, cleansed] = await Promise.all([readFile(join(dir, 'report.json'), 'utf8'), readFile(join(dir, 'cleansed.jsonl'), 'utf8')]);
  return parseAuditOutputs(report, cleansed, name);
}

/** The diff in counts for report.json, with its text capped to `show` samples per list. */
export function sinceLastAudit(d: AuditDiff, show = 5): SinceLastAudit {
  return {
    before: { datasetHash: d.before.datasetHash, samples: d.before.samples, targetClasses: [...d.before.targetClasses] },
    samples: {
      added: d.samples.added.length,
      removed: d.samples.removed.length,
      labelChanged: d.samples.labelChanged.length,
      common: d.samples.common,
    },
    verdictChanges: d.verdictChanges.map((c) => ({
      name: c.name,
      verdict: c.verdict,
      ...(c.kindBefore ? { kindBefore: c.kindBefore } : {}),
      ...(c.kindAfter ? { kindAfter: c.kindAfter } : {}),
    })),
    newlyRelabelled: d.newlyRelabelled.length,
    newlyDropped: d.newlyDropped.length,
    restored: d.restored.length,
    configChanged: [...d.configChanged],
    text: formatDiff(d, { show }).split('\n'),
  };
}

/** True when the two audits found the same thing on the same samples with the same statistics. */
export function isEmptyDiff(d: AuditDiff): boolean {
  const s = d.samples;
  const moved = d.classes.some((c) =>
    [c.count, c.sND, c.sNDNormalized, c.sD].some((m) => m.delta !== 0 && !(m.before === null && m.after === null)),
  );
  return (
    s.added.length + s.removed.length + s.changed.length + s.labelChanged.length === 0 &&
    d.verdictChanges.length + d.newlyRelabelled.length + d.newlyDropped.length + d.restored.length + d.relabelledElsewhere.length === 0 &&
    d.configChanged.length === 0 &&
    !moved
  );
}

const TEST_OF_KIND: Record<ClassKind, string> = {
  'non-disruptive': 'non-disruptive (S_ND test)',
  disruptive: 'disruptive (S_D test)',
  clean: 'clean',
};

function verdictLine(c: ClassDiff): string {
  const b = c.kindBefore ? TEST_OF_KIND[c.kindBefore] : '';
  const a = c.kindAfter ? TEST_OF_KIND[c.kindAfter] : '';
  switch (c.verdict) {
    case 'flagged':
      return `${c.name}: flagged, ${a}`;
    case 'unflagged':
      return `${c.name}: no longer flagged; was ${b}`;
    case 'kind-changed':
      return `${c.name}: still flagged, now ${a}; was ${b}`;
    case 'added':
      return `${c.name}: new class, ${a}`;
    default:
      return `${c.name}: class gone; was ${b}`;
  }
}

const fmt = (v: number | null, digits: number): string => (v === null ? 'n/a' : v.toFixed(digits));
const signed = (v: number | null, digits: number): string => (v === null ? 'n/a' : `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`);
const moveText = (m: StatMove, digits: number): string =>
  m.delta === 0 ? fmt(m.after, digits) : `${fmt(m.before, digits)} -> ${fmt(m.after, digits)} (${signed(m.delta, digits)})`;

function sampleList(label: string, list: readonly SampleChange[], show: number): string[] {
  if (!list.length) return [];
  const fresh = list.filter((c) => !c.before).length;
  const head = `${label}: ${list.length}${fresh ? ` (${fresh} of them new samples)` : ''}`;
  const lines = list.slice(0, show).map((c) => {
    const o = (x: SampleOutcome) => `${x.action}${x.newLabel ? ` to ${x.newLabel}` : ''} (${x.side})`;
    return `  ${c.id} [${c.label}]: ${c.before ? o(c.before) : 'new'} -> ${o(c.after)}`;
  });
  return [head, ...lines, ...(list.length > show ? [`  ... ${list.length - show} more (--json lists them all)`] : [])];
}

/** A short text rendering: verdicts and sample counts first, then each class's statistics. */
export function formatDiff(d: AuditDiff, o: { show?: number } = {}): string {
  const show = o.show ?? 5;
  const verdict = (s: AuditSummaryLine) => (s.targetClasses.length ? `poisoned: ${s.targetClasses.join(', ')}` : 'clean');
  const side = (s: AuditSummaryLine) =>
    `${s.datasetName} (dataset ${s.datasetHash.slice(0, 12)}, ${s.samples} samples) ${verdict(s)}; kept ${s.counts.kept}, relabelled ${s.counts.relabelled}, dropped ${s.counts.dropped}`;
  const lines = [`before: ${side(d.before)}`, `after:  ${side(d.after)}`];
  if (isEmptyDiff(d)) return [...lines, 'no changes: same samples, verdicts, actions and statistics'].join('\n');
  const s = d.samples;
  const by = d.matchedBy === 'id' ? 'by id; no content hashes, so a file changed in place is not seen' : 'by id and content hash';
  lines.push(
    `samples (${by}): +${s.added.length} added, -${s.removed.length} removed${d.matchedBy === 'id+hash' ? `, ${s.changed.length} changed` : ''}, ${s.labelChanged.length} with another label, ${s.common} in both`,
  );
  lines.push(
    d.verdictChanges.length
      ? `verdict changes:\n${d.verdictChanges.map((c) => `  ${verdictLine(c)}`).join('\n')}`
      : 'verdict changes: none',
  );
  lines.push(...sampleList('newly relabelled', d.newlyRelabelled, show));
  lines.push(...sampleList('newly dropped', d.newlyDropped, show));
  lines.push(...sampleList('restored (kept again)', d.restored, show));
  lines.push(...sampleList('relabelled to another class', d.relabelledElsewhere, show));
  if (d.configChanged.length) lines.push(`config changed: ${d.configChanged.join(', ')}`);
  const rows = [
    ['class', 'n', 'S_ND', 'S_ND normalised', 'S_D', 'verdict'],
    ...d.classes.map((c) => [
      c.name,
      moveText(c.count, 0),
      moveText(c.sND, 2),
      moveText(c.sNDNormalized, 2),
      moveText(c.sD, 3),
      c.verdict === 'unchanged' ? (c.kindAfter ?? '') : `${c.kindBefore ?? '-'} -> ${c.kindAfter ?? '-'}`,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  lines.push('classes (before -> after):', ...rows.map((r) => `  ${r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`.trimEnd()));
  return lines.join('\n');
}
