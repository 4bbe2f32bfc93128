// Nightly (or any cron) audits as Temporal Schedules. Overlap policy SKIP: an audit still
// running when the next one is due is left alone and the new one is not started; a manual
// trigger obeys the same policy.
import { ScheduleOverlapPolicy, type Client, type ScheduleSummary } from '@temporalio/client';
import type { Pipeline } from '../workflows/types.js';
import { startOptions, workflowIdFor } from './audit.js';

export interface ScheduleInfo {
  scheduleId: string;
  cron: string[];
  paused: boolean;
  note?: string;
  recentRuns: string[];
  nextRuns: string[];
}

function defaultScheduleId(pipeline: Pipeline): string {
  return `audit-schedule-${pipeline.name}`;
}

/** Creates a schedule that starts the pipeline's audit on `cron` (standard 5-field cron, UTC). */
export async function createSchedule(
  client: Client,
  pipeline: Pipeline,
  o: { cron: string; scheduleId?: string; paused?: boolean; note?: string },
): Promise<string> {
  const scheduleId = o.scheduleId ?? defaultScheduleId(pipeline);
  // Each scheduled run gets this id plus the schedule's timestamp suffix.
  const { args, ...start } = startOptions(pipeline, await workflowIdFor(pipeline));
  await client.schedule.create({
    scheduleId,
    spec: { cronExpressions: [o.cron] },
    action: { type: 'startWorkflow', workflowType: 'auditWorkflow' as const, args, ...start },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '10 minutes', pauseOnFailure: false },
    state: { paused: o.paused ?? false, note: o.note ?? `backdoor-audit pipeline ${pipeline.file}` },
    memo: { pipeline: pipeline.name, cron: o.cron },
  });
  return scheduleId;
}

export async function listSchedules(client: Client): Promise<ScheduleInfo[]> {
  const out: ScheduleInfo[] = [];
  for await (const s of client.schedule.list() as AsyncIterable<ScheduleSummary>) {
    const handle = client.schedule.getHandle(s.scheduleId);
    const d = await handle.describe();
    out.push({
      scheduleId: s.scheduleId,
      cron: typeof d.memo?.cron === 'string' ? [d.memo.cron] : [],
      paused: d.state.paused,
      ...(d.state.note ? { note: d.state.note } : {}),
      recentRuns: d.info.recentActions.map((a) => `${a.action.workflow.workflowId} @ ${a.takenAt.toISOString()}`),
      nextRuns: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
    });
  }
  return out;
}

export async function deleteSchedule(client: Client, scheduleId: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).delete();
}

/** Starts the scheduled audit now, unless one of its runs is still going (SKIP). */
export async function triggerSchedule(client: Client, scheduleId: string): Promise<void> {
  await client.schedule.getHandle(scheduleId).trigger(ScheduleOverlapPolicy.SKIP);
}

/** Workflow ids this schedule has started, most recent last. */
export async function scheduleRuns(client: Client, scheduleId: string): Promise<{ workflowIds: string[]; running: string[] }> {
  const d = await client.schedule.getHandle(scheduleId).describe();
  return {
    workflowIds: d.info.recentActions.map((a) => a.action.workflow.workflowId),
    running: d.info.runningActions.map((a) => a.workflow.workflowId),
  };
}
