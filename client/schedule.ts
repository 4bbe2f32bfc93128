// Nightly (or any cron) audits as Temporal Schedules. Overlap policy SKIP: an audit still
// running when the next one is due is left alone and the new one is not started; a manual
// trigger and a backfill obey the same policy unless told otherwise.
import {
  DAYS_OF_WEEK,
  MONTHS,
  ScheduleOverlapPolicy,
  type CalendarSpecDescription,
  type Client,
  type Range,
  type ScheduleDescription,
  type ScheduleSpecDescription,
  type ScheduleSummary,
} from '@temporalio/client';
import type { AuditResult, Pipeline } from '../workflows/types.js';
import { startOptions, workflowIdFor } from './audit.js';

export interface ScheduleRun {
  workflowId: string;
  /** The time the cron (or a backfill) named for this run. */
  scheduledAt: string;
  /** When the schedule actually started it. */
  takenAt: string;
  /** `poisoned: <classes>`, `clean`, `running`, `failed`, `cancelled`, `terminated`, `timed out`, or `unknown (...)`. */
  verdict: string;
}

export interface ScheduleInfo {
  scheduleId: string;
  /** The schedule's spec as cron expressions (rendered from what the server keeps; see cronOfSpec). */
  cron: string[];
  paused: boolean;
  note?: string;
  overlap: ScheduleOverlapPolicy;
  /** The audited pipeline's name, from the schedule's action (follows `schedule update`). */
  pipeline?: string;
  recentRuns: string[];
  nextRuns: string[];
  /** The most recent run, with its verdict; absent before the first run. */
  lastRun?: ScheduleRun;
}

function defaultScheduleId(pipeline: Pipeline): string {
  return `audit-schedule-${pipeline.name}`;
}

/** The schedule's action for `pipeline`: start its audit (each run gets the schedule's timestamp suffix on this id). */
async function auditAction(pipeline: Pipeline) {
  const { args, ...start } = startOptions(pipeline, await workflowIdFor(pipeline));
  return { type: 'startWorkflow' as const, workflowType: 'auditWorkflow' as const, args, ...start };
}

/** Creates a schedule that starts the pipeline's audit on `cron` (standard 5-field cron, UTC). */
export async function createSchedule(
  client: Client,
  pipeline: Pipeline,
  o: { cron: string; scheduleId?: string; paused?: boolean; note?: string },
): Promise<string> {
  const scheduleId = o.scheduleId ?? defaultScheduleId(pipeline);
  await client.schedule.create({
    scheduleId,
    spec: { cronExpressions: [o.cron] },
    action: await auditAction(pipeline),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '10 minutes', pauseOnFailure: false },
    // `list` shows the note of a paused schedule: say why it is paused.
    state: { paused: o.paused ?? false, note: o.note ?? (o.paused ? 'created with --paused' : `backdoor-audit pipeline ${pipeline.file}`) },
    // The memo cannot be changed by an update: it records the pipeline the schedule was created
    // with; `list` reads the live spec and action instead.
    memo: { pipeline: pipeline.name },
  });
  return scheduleId;
}

/** The schedule's spec as cron expressions. The server compiles cron strings into calendars, so they are rendered back. */
export function cronOfSpec(spec: ScheduleSpecDescription): string[] {
  const tz = spec.timezone ? `CRON_TZ=${spec.timezone} ` : '';
  return [
    ...(spec.calendars ?? []).map((c) => tz + cronOfCalendar(c)),
    ...(spec.intervals ?? []).map((i) => `@every ${Math.round(i.every / 1000)}s${i.offset ? `/${Math.round(i.offset / 1000)}s` : ''}`),
  ];
}

/** One calendar as cron: 5 fields, or 7 (second ... year) when it needs seconds or years. */
function cronOfCalendar(c: CalendarSpecDescription): string {
  const month = c.month.map((r) => ({ start: MONTHS.indexOf(r.start) + 1, end: MONTHS.indexOf(r.end) + 1, step: r.step }));
  const dow = c.dayOfWeek.map((r) => ({ start: DAYS_OF_WEEK.indexOf(r.start), end: DAYS_OF_WEEK.indexOf(r.end), step: r.step }));
  const five = [
    cronField(c.minute, 0, 59),
    cronField(c.hour, 0, 23),
    cronField(c.dayOfMonth, 1, 31),
    cronField(month, 1, 12),
    cronField(dow, 0, 6),
  ];
  const second = cronField(c.second, 0, 59);
  const fields = second === '0' && c.year.length === 0 ? five : [second, ...five, c.year.length ? cronField(c.year, 0, 0) : '*'];
  return fields.join(' ') + (c.comment ? ` # ${c.comment}` : '');
}

function cronField(ranges: readonly Range<number>[], min: number, max: number): string {
  if (ranges.length === 0) return '*';
  return ranges
    .map(({ start, end, step }) => {
      const last = Math.max(end, start);
      const by = step > 1 ? `/${step}` : '';
      if (start === min && last === max) return `*${by}`;
      return start === last ? `${start}${by}` : `${start}-${last}${by}`;
    })
    .join(',');
}

/**
 * What a run of a schedule found: the status from describe, and for a completed run the target
 * classes from its result. The result is the workflow's close event only (a few hundred bytes of
 * references and counts, never the report), so this stays cheap however big the audit.
 */
export async function runVerdict(client: Client, workflowId: string): Promise<string> {
  const handle = client.workflow.getHandle<(p: Pipeline) => Promise<AuditResult>>(workflowId);
  try {
    const status = (await handle.describe()).status.name;
    if (status === 'RUNNING') return 'running';
    if (status === 'COMPLETED') {
      const targets = (await handle.result()).summary.targetClasses;
      return targets.length ? `poisoned: ${targets.join(', ')}` : 'clean';
    }
    if (status === 'TIMED_OUT') return 'timed out';
    return status.toLowerCase(); // failed, cancelled, terminated, continued_as_new
  } catch (err) {
    // Deleted by retention, or a result this client cannot decode (another payload key).
    return `unknown (${(err as Error).message})`;
  }
}

function lastAction(d: ScheduleDescription) {
  // Backfilled runs are taken now but named for the past: the most recently taken is the last.
  return [...d.info.recentActions].sort((a, b) => a.takenAt.getTime() - b.takenAt.getTime()).at(-1);
}

export async function describeSchedule(client: Client, scheduleId: string): Promise<ScheduleInfo> {
  const d = await client.schedule.getHandle(scheduleId).describe();
  const last = lastAction(d);
  const pipeline = (d.action.args?.[0] as Partial<Pipeline> | undefined)?.name;
  return {
    scheduleId,
    cron: cronOfSpec(d.spec),
    paused: d.state.paused,
    ...(d.state.note ? { note: d.state.note } : {}),
    overlap: d.policies.overlap,
    ...(typeof pipeline === 'string' ? { pipeline } : {}),
    recentRuns: d.info.recentActions.map((a) => `${a.action.workflow.workflowId} @ ${a.takenAt.toISOString()}`),
    nextRuns: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
    ...(last
      ? {
          lastRun: {
            workflowId: last.action.workflow.workflowId,
            scheduledAt: last.scheduledAt.toISOString(),
            takenAt: last.takenAt.toISOString(),
            verdict: await runVerdict(client, last.action.workflow.workflowId),
          },
        }
      : {}),
  };
}

export async function listSchedules(client: Client): Promise<ScheduleInfo[]> {
  const ids: string[] = [];
  for await (const s of client.schedule.list() as AsyncIterable<ScheduleSummary>) ids.push(s.scheduleId);
  // The listing is eventually consistent; describe gives each schedule's current state.
  return Promise.all(ids.sort().map((id) => describeSchedule(client, id)));
}

/** `schedule list` as a table: schedule, pipeline, cron, state (+ note), next run, last run, its verdict. */
export function formatScheduleTable(schedules: readonly ScheduleInfo[]): string {
  if (schedules.length === 0) return 'no schedules';
  const rows = [
    ['SCHEDULE', 'PIPELINE', 'CRON (UTC)', 'STATE', 'NEXT RUN', 'LAST RUN', 'VERDICT'],
    ...schedules.map((s) => [
      s.scheduleId,
      s.pipeline ?? '?',
      s.cron.join(' | ') || '-',
      s.paused ? `paused${s.note ? ` (${s.note})` : ''}` : 'active',
      s.paused ? '-' : (s.nextRuns[0] ?? '-'),
      s.lastRun ? `${s.lastRun.workflowId}` : '-',
      s.lastRun?.verdict ?? '-',
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

export async function deleteSchedule(client: Client, scheduleId: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).delete();
}

/** Starts the scheduled audit now, unless one of its runs is still going (SKIP). */
export async function triggerSchedule(client: Client, scheduleId: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).trigger(ScheduleOverlapPolicy.SKIP);
}

export async function pauseSchedule(client: Client, scheduleId: string, note?: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).pause(note ?? 'paused with backdoor-audit');
}

export async function unpauseSchedule(client: Client, scheduleId: string, note?: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).unpause(note ?? 'unpaused with backdoor-audit');
}

/**
 * Changes a schedule's cron (the whole spec becomes that one expression) and/or the pipeline it
 * audits (the action is rebuilt as `schedule create` builds it: workflow id, queues, search
 * attributes). Policies, paused state and note are kept.
 */
export async function updateSchedule(client: Client, scheduleId: string, o: { cron?: string; pipeline?: Pipeline }): Promise<void> {
  if (o.cron === undefined && o.pipeline === undefined) throw new Error('schedule update: give a new --cron, a pipeline file, or both');
  const action = o.pipeline ? await auditAction(o.pipeline) : undefined;
  await client.schedule.getHandle(scheduleId).update((prev) => ({
    ...prev,
    ...(o.cron !== undefined ? { spec: { cronExpressions: [o.cron] } } : {}),
    ...(action ? { action } : {}),
  }));
}

export const OVERLAP_POLICIES: Readonly<Record<string, ScheduleOverlapPolicy>> = {
  skip: ScheduleOverlapPolicy.SKIP,
  'buffer-one': ScheduleOverlapPolicy.BUFFER_ONE,
  'buffer-all': ScheduleOverlapPolicy.BUFFER_ALL,
  'cancel-other': ScheduleOverlapPolicy.CANCEL_OTHER,
  'terminate-other': ScheduleOverlapPolicy.TERMINATE_OTHER,
  'allow-all': ScheduleOverlapPolicy.ALLOW_ALL,
};

/**
 * Starts the audits the cron would have started in [from, to], now, under the schedule's own
 * overlap policy unless `overlap` is given. Each audits the dataset as it is now (the time only
 * names the run); under SKIP the first one is started and the rest are skipped while it runs.
 */
export async function backfillSchedule(
  client: Client,
  scheduleId: string,
  o: { from: Date; to: Date; overlap?: ScheduleOverlapPolicy },
): Promise<{ overlap: ScheduleOverlapPolicy; times: number }> {
  if (!(o.from.getTime() < o.to.getTime()))
    throw new Error(`schedule backfill: --from ${o.from.toISOString()} is not before --to ${o.to.toISOString()}`);
  const handle = client.schedule.getHandle(scheduleId);
  const d = await handle.describe();
  const overlap = o.overlap ?? d.policies.overlap;
  await handle.backfill({ start: o.from, end: o.to, overlap });
  return { overlap, times: cronTimesIn(d.spec, o.from, o.to) };
}

/**
 * How many times the spec's calendars match in [from, to] (minute resolution; NaN past a year, or for time zones and intervals):
 * what the backfill asks for, before the overlap policy skips any.
 */
export function cronTimesIn(spec: ScheduleSpecDescription, from: Date, to: Date): number {
  if (spec.timezone || (spec.intervals ?? []).length) return NaN; // not needed for our own schedules' UTC crons
  if (to.getTime() - from.getTime() > 366 * 86_400_000) return NaN; // a minute-by-minute count; longer windows are not counted
  const calendars = spec.calendars ?? [];
  let n = 0;
  for (let t = Math.ceil(from.getTime() / 60_000) * 60_000; t <= to.getTime(); t += 60_000) {
    const at = new Date(t);
    if (calendars.some((c) => calendarMatches(c, at))) n++;
  }
  return n;
}

function calendarMatches(c: CalendarSpecDescription, t: Date): boolean {
  const inRanges = (ranges: readonly Range<number>[], v: number) =>
    ranges.length === 0 || ranges.some((r) => v >= r.start && v <= Math.max(r.end, r.start) && (v - r.start) % Math.max(r.step, 1) === 0);
  const month = c.month.map((r) => ({ start: MONTHS.indexOf(r.start) + 1, end: MONTHS.indexOf(r.end) + 1, step: r.step }));
  const dow = c.dayOfWeek.map((r) => ({ start: DAYS_OF_WEEK.indexOf(r.start), end: DAYS_OF_WEEK.indexOf(r.end), step: r.step }));
  return (
    inRanges(c.second, 0) &&
    inRanges(c.minute, t.getUTCMinutes()) &&
    inRanges(c.hour, t.getUTCHours()) &&
    inRanges(c.dayOfMonth, t.getUTCDate()) &&
    inRanges(month, t.getUTCMonth() + 1) &&
    inRanges(dow, t.getUTCDay()) &&
    inRanges(c.year, t.getUTCFullYear())
  );
}

/** Workflow ids this schedule has started, most recent last. */
export async function scheduleRuns(client: Client, scheduleId: string): Promise<{ workflowIds: string[]; running: string[] }> {
  const d = await client.schedule.getHandle(scheduleId).describe();
  return {
    workflowIds: d.info.recentActions.map((a) => a.action.workflow.workflowId),
    running: d.info.runningActions.map((a) => a.workflow.workflowId),
  };
}
