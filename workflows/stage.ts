// Workflow-side stage runner (deterministic code only): probe the cache with a local activity,
// run the stage's activity on its queue only on a miss, and keep the progress table that the
// `progress` query returns and the UI shows as the workflow's current details.
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  log,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  workflowInfo,
  type ActivityFunctionWithOptions,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { AuditActivities } from '../activities/index.js';
import { STAGE_SPECS } from './graph.js';
import { CORRUPT_ARTIFACT, NON_RETRYABLE, STAGES } from './types.js';
import type {
  ArtifactRef,
  AuditProgress,
  EpochUpdate,
  PipelineTemporalOptions,
  StageName,
  StageOutcome,
  StageGroupRequest,
  StageProgress,
  StageRequest,
  Verdict,
} from './types.js';

export class ProgressTable {
  private readonly rows = new Map<string, StageProgress>();
  verdict: Verdict = 'running';
  targetClasses: string[] = [];
  currentStage = 'starting';
  done = false;

  constructor(readonly meta: { workflowId: string; pipeline: string; dataset: string }) {}

  /** Declares a stage row up front, so the table shows the whole DAG from the start. */
  plan(id: string, stage: StageName): void {
    if (!this.rows.has(id)) this.rows.set(id, { id, stage, state: 'pending' });
  }

  update(id: string, stage: StageName, patch: Partial<StageProgress>): void {
    const row = this.rows.get(id) ?? { id, stage, state: 'pending' };
    this.rows.set(id, { ...row, ...patch });
    this.publish();
  }

  epoch(u: EpochUpdate): void {
    const row = this.rows.get(u.id);
    // Signals are not ordered with activity completions: keep the highest epoch seen, and
    // leave a finished row's figure alone.
    if (!row || (row.epoch !== undefined && u.epoch < row.epoch)) return;
    const live = row.state === 'running' || row.state === 'pending';
    this.rows.set(u.id, {
      ...row,
      epoch: u.epoch,
      epochs: u.epochs,
      ...(live && u.loss !== undefined ? { loss: u.loss, figure: `loss ${u.loss.toFixed(4)}` } : {}),
      ...(u.resumedFromEpoch ? { resumedFromEpoch: u.resumedFromEpoch } : {}),
      ...(live && u.attempt !== undefined ? { attempt: u.attempt } : {}),
    });
  }

  snapshot(): AuditProgress {
    return {
      ...this.meta,
      currentStage: this.currentStage,
      verdict: this.verdict,
      targetClasses: [...this.targetClasses],
      stages: this.ordered().map((r) => ({ ...r })),
      done: this.done,
    };
  }

  /** Rows in DAG order (flows before density even when they were added later), else as added. */
  private ordered(): StageProgress[] {
    const rank = (r: StageProgress) => STAGES.indexOf(r.stage);
    return [...this.rows.values()]
      .map((r, i) => ({ r, i }))
      .sort((a, b) => rank(a.r) - rank(b.r) || a.i - b.i)
      .map(({ r }) => r);
  }

  /** The table as Temporal markdown: the UI shows it as the workflow's current details. */
  publish(): void {
    const lines = ['| stage | state | time | figure |', '|---|---|---|---|'];
    for (const r of this.ordered()) {
      const time = r.seconds !== undefined ? `${r.seconds.toFixed(1)} s` : '';
      const epochs = r.epochs ? ` (epoch ${r.epoch ?? 0}/${r.epochs})` : '';
      lines.push(`| ${r.id} | ${r.state}${epochs} | ${time} | ${r.figure ?? ''} |`);
    }
    setCurrentDetails(`**${this.meta.pipeline}** on ${this.meta.dataset}: ${this.verdict}\n\n${lines.join('\n')}`);
  }
}

export interface StageContext {
  temporal: PipelineTemporalOptions;
  progress: ProgressTable;
  /** Called when a stage starts (search attribute BackdoorStage). */
  onStart?: (stage: StageName) => void;
}

/** Options of a stage's activity: its queue, timeouts and retry policy. */
function stageOptions(t: PipelineTemporalOptions, stage: StageName): ActivityOptions {
  return {
    taskQueue: t.taskQueues[t.stageQueues[stage]],
    startToCloseTimeout: t.startToCloseTimeouts[stage],
    heartbeatTimeout: t.heartbeatTimeouts[stage],
    // Explicit: an unset cancellationType is encoded as TRY_CANCEL, and a cancelled audit must
    // not close while its training still runs on a worker.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: {
      maximumAttempts: t.maximumAttempts,
      initialInterval: '1s',
      backoffCoefficient: 2,
      maximumInterval: '1m',
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  };
}

// The probe runs as a local activity on the workflow's own worker: a cached stage then costs
// no task-queue round trip and never waits for a (possibly absent) GPU worker.
const { probe } = proxyLocalActivities<AuditActivities>({
  startToCloseTimeout: '10m', // hashing a large artifact before reuse
  retry: { maximumAttempts: 3, initialInterval: '1s', nonRetryableErrorTypes: NON_RETRYABLE },
});

type StageActivity = ActivityFunctionWithOptions<(req: StageRequest<unknown>) => Promise<StageOutcome>>;

/**
 * Runs one stage: cache hit -> its stored outcome, miss -> the stage's activity (a stage
 * declared uncached is always computed). `id` names the progress row (`flow[3]`, `ingest-test`).
 */
export async function runStage(
  ctx: StageContext,
  id: string,
  stage: StageName,
  params: unknown,
  inputs: Record<string, ArtifactRef>,
): Promise<StageOutcome> {
  const { progress, temporal } = ctx;
  const queue = temporal.taskQueues[temporal.stageQueues[stage]];
  const request: StageRequest<unknown> = {
    stage,
    label: id,
    params,
    inputs,
    reportTo: workflowInfo().workflowId,
    options: { checkpointEvery: temporal.checkpointEvery },
  };
  progress.currentStage = id;
  ctx.onStart?.(stage);
  progress.update(id, stage, { state: 'running', queue });
  try {
    const found = !STAGE_SPECS[stage].cached ? { key: '' } : await probe.executeWithOptions({ summary: `${id}: cache lookup` }, [request]);
    if ('hit' in found && found.hit) {
      const hit = found.hit;
      progress.update(id, stage, { state: 'cached', key: found.key, seconds: 0, figure: hit.info.figure });
      log.info(`${id}: cache hit (key ${found.key.slice(0, 12)}) ${hit.info.figure}`);
      return hit;
    }
    if (found.key) progress.update(id, stage, { key: found.key });
    const activities = proxyActivities<AuditActivities>(stageOptions(temporal, stage));
    const run = activities[stage] as unknown as StageActivity;
    // The probe's key travels with the request: the activity does not fingerprint external inputs again.
    // Summaries start with the row id: the CLI reads it back from the history (client/audit.ts ActivityLabels).
    const out = await run.executeWithOptions(
      { summary: found.key ? `${id}: computing on ${queue} (cache miss, key ${found.key.slice(0, 12)})` : `${id}: computing on ${queue}` },
      [found.key ? { ...request, key: found.key } : request],
    );
    progress.update(id, stage, {
      state: 'done',
      seconds: out.seconds,
      figure: out.info.figure,
      ...(out.resumedFromEpoch ? { resumedFromEpoch: out.resumedFromEpoch } : {}),
      ...(out.attempt !== undefined ? { attempt: out.attempt } : {}),
    });
    log.info(
      `${id}: computed in ${out.seconds.toFixed(1)} s${out.resumedFromEpoch ? ` (resumed from epoch ${out.resumedFromEpoch})` : ''}: ${out.info.figure}`,
    );
    return out;
  } catch (err) {
    progress.update(id, stage, { state: 'failed', error: failureMessage(err) });
    throw err;
  }
}

type GroupActivity = ActivityFunctionWithOptions<(req: StageGroupRequest) => Promise<StageOutcome[]>>;

/**
 * Runs a group of a grouped per-class stage's instances: probes every member (local
 * activities), then computes the misses together in one `stageGroup` activity on the stage's
 * queue. `id` names the group (`flow[0-4]`); each member keeps its own row.
 */
export async function runStageGroup(ctx: StageContext, id: string, stage: StageName, members: StageRequest[]): Promise<StageOutcome[]> {
  const { progress, temporal } = ctx;
  const queue = temporal.taskQueues[temporal.stageQueues[stage]];
  const reportTo = workflowInfo().workflowId;
  const options = { checkpointEvery: temporal.checkpointEvery };
  progress.currentStage = id;
  ctx.onStart?.(stage);
  for (const m of members) progress.update(m.label, stage, { state: 'running', queue });
  try {
    const found = await Promise.all(members.map((m) => probe.executeWithOptions({ summary: `${m.label}: cache lookup` }, [m])));
    const outs: (StageOutcome | undefined)[] = found.map((f) => f.hit);
    const misses = members.flatMap((m, i) => (outs[i] ? [] : [{ ...m, key: found[i].key, reportTo, options }]));
    if (misses.length > 0) {
      progress.update(id, stage, { state: 'running', queue });
      const activities = proxyActivities<AuditActivities>(stageOptions(temporal, stage));
      const computed = await (activities.stageGroup as unknown as GroupActivity).executeWithOptions(
        { summary: `${id}: computing ${misses.length} of ${members.length} together on ${queue}` },
        [{ stage, label: id, members: misses, reportTo, options }],
      );
      let j = 0;
      members.forEach((_, i) => (outs[i] ??= computed[j++]));
      progress.update(id, stage, { state: 'done', seconds: computed.reduce((a, o) => a + o.seconds, 0) });
    }
    const done = outs as StageOutcome[];
    done.forEach((out, i) =>
      progress.update(members[i].label, stage, {
        state: out.cached ? 'cached' : 'done',
        key: found[i].key,
        seconds: out.seconds,
        figure: out.info.figure,
      }),
    );
    log.info(`${id}: ${done.filter((o) => o.cached).length} of ${members.length} cached`);
    return done;
  } catch (err) {
    for (const m of members) progress.update(m.label, stage, { state: 'failed', error: failureMessage(err) });
    throw err;
  }
}

/** The artifact key named by a CorruptArtifact failure, if `err` is one. */
export function corruptArtifactKey(err: unknown): string | undefined {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (cause instanceof ApplicationFailure && cause.type === CORRUPT_ARTIFACT) {
    const key = cause.details?.[0];
    return typeof key === 'string' ? key : undefined;
  }
  return undefined;
}

/**
 * A failed row's `error`: the innermost message of the failure chain (a DatasetError's names the
 * file). The row says where; client/audit.ts explainFailure matches a workflow's failure to its
 * row by this text.
 */
export function failureMessage(err: unknown): string {
  let e: unknown = err;
  // The innermost cause says what went wrong; the wrappers (ActivityFailure, ChildWorkflowFailure) say where.
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
