// Starting, attaching to and following audit workflows. The workflow id is derived from the
// pipeline's content and the dataset's identity, so running the same audit twice attaches to
// the live run instead of starting a duplicate.
import pMap from 'p-map';
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  ChildWorkflowFailure,
  decodePendingActivityState,
  TerminatedFailure,
  TimeoutFailure,
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
  type Client,
  type WorkflowExecutionDescription,
  type WorkflowHandle,
} from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { canonicalJson, sha256Hex } from '../data/hash.js';
import { datasetFingerprint } from '../data/fingerprint.js';
import type { auditWorkflow } from '../workflows/audit.js';
import { datasetKey, progressQuery, verdictKey } from '../workflows/definitions.js';
import {
  CORRUPT_ARTIFACT,
  TASK_QUEUES,
  type AuditProgress,
  type AuditResult,
  type Pipeline,
  type StageProgress,
} from '../workflows/types.js';

type PendingActivity = NonNullable<WorkflowExecutionDescription['raw']['pendingActivities']>[number];

export type AuditHandle = WorkflowHandle<typeof auditWorkflow>;

/**
 * The pipeline with its datasets' fingerprints filled in: computed once per run, they name the
 * workflow and key the ingests (the workers do not fingerprint the files again).
 */
async function withFingerprints(pipeline: Pipeline): Promise<Pipeline> {
  const { dataset, testSet } = pipeline;
  return {
    ...pipeline,
    dataset: { ...dataset, fingerprint: dataset.fingerprint ?? (await datasetFingerprint(dataset.source)) },
    ...(testSet ? { testSet: { ...testSet, fingerprint: testSet.fingerprint ?? (await datasetFingerprint(testSet.source)) } } : {}),
  };
}

/** Identity of the audit: everything that changes its result, not where the file lies or how Temporal runs it. */
export async function auditIdentity(pipeline: Pipeline): Promise<string> {
  const p = await withFingerprints(pipeline);
  const { file: _file, description: _description, temporal, dataset, testSet, ...rest } = p;
  const { fingerprint: trainPrint, ...train } = dataset;
  const datasets = [trainPrint];
  const content: Record<string, unknown> = { ...rest, dataset: train };
  // Runs on other task queues (an embedded run's are its store's) are other audits: attaching
  // to one would follow a run whose workers and artifacts this run cannot reach.
  const { cpu, gpu } = temporal.taskQueues;
  if (cpu !== TASK_QUEUES.cpu || gpu !== TASK_QUEUES.gpu) content.taskQueues = { cpu, gpu };
  if (testSet) {
    const { fingerprint: testPrint, ...test } = testSet;
    datasets.push(testPrint);
    content.testSet = test;
  }
  return sha256Hex(canonicalJson({ content, datasets }));
}

export async function workflowIdFor(pipeline: Pipeline): Promise<string> {
  return pipeline.temporal.workflowId ?? `audit-${pipeline.name}-${(await auditIdentity(pipeline)).slice(0, 16)}`;
}

/** Options shared by a direct start and a schedule's action. */
export function startOptions(pipeline: Pipeline, workflowId: string) {
  const datasetName = pipeline.dataset.name ?? pipeline.name;
  return {
    taskQueue: pipeline.temporal.taskQueues.cpu,
    workflowId,
    args: [pipeline] as [Pipeline],
    typedSearchAttributes: [
      { key: datasetKey, value: datasetName },
      { key: verdictKey, value: 'running' },
    ],
    memo: { pipeline: pipeline.name, pipelineFile: pipeline.file },
    staticSummary: `audit '${pipeline.name}' of ${datasetName}`,
    staticDetails: [pipeline.description ?? '', `pipeline file: ${pipeline.file}`, `output: ${pipeline.output}`]
      .filter(Boolean)
      .join('\n\n'),
  };
}

export interface StartedAudit {
  handle: AuditHandle;
  workflowId: string;
  /** True when a run of the same audit was already live and this call joined it. */
  attached: boolean;
}

/**
 * Starts the audit, or attaches to the live run with the same id. An aborted `signal` stops it
 * before anything starts (fingerprinting a large dataset takes a while), with `signal.reason`.
 */
export async function startAudit(client: Client, given: Pipeline, workflowId?: string, signal?: AbortSignal): Promise<StartedAudit> {
  signal?.throwIfAborted();
  const pipeline = await withFingerprints(given);
  const id = workflowId ?? (await workflowIdFor(pipeline));
  signal?.throwIfAborted();
  const existing = client.workflow.getHandle<typeof auditWorkflow>(id);
  const running = await existing
    .describe()
    .then((d) => d.status.name === 'RUNNING')
    .catch(() => false);
  if (running) return { handle: existing, workflowId: id, attached: true };
  try {
    const handle = await client.workflow.start<typeof auditWorkflow>('auditWorkflow', {
      ...startOptions(pipeline, id),
      // A run that started between the describe and here is joined, not duplicated.
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    return { handle, workflowId: id, attached: false };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { handle: existing, workflowId: id, attached: true };
    throw err;
  }
}

/**
 * How long a one-off progress query (the final table of a closed run, `status`) waits for a
 * worker to answer: the server holds a query while no worker polls, up to 30 s when one did recently.
 */
export const QUERY_WAIT_MS = 5_000;

/** The progress table, or undefined while no worker answers the query (within `timeoutMs`, when given). */
export async function queryProgress(handle: WorkflowHandle, timeoutMs?: number): Promise<AuditProgress | undefined> {
  const query = handle.query(progressQuery).catch(() => undefined);
  if (timeoutMs === undefined) return query;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), timeoutMs);
  });
  try {
    return await Promise.race([query, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- retries: what describe() says about a stage's activity waiting for its next attempt ----

/** A stage whose activity failed at least once and is waiting for (or running) another attempt. */
export interface StageRetry {
  /** The attempt scheduled or running now (2 = first retry). */
  attempt: number;
  /** The retry policy's limit, when it has one. */
  maximumAttempts?: number;
  /** The last attempt's failure, innermost message. */
  lastFailure?: string;
  /** When the next attempt starts, while it waits for its back-off. */
  nextAttemptAt?: Date;
  /** True once a worker runs the attempt; false while it waits (back-off, or no worker polling). */
  running: boolean;
}

/** A progress row as the CLI shows it: the workflow's row, and a pending retry of its activity if any. */
export type ShownStage = StageProgress & { retry?: StageRetry };
export type ShownProgress = Omit<AuditProgress, 'stages'> & { stages: ShownStage[] };

type ProtoFailureInfo = { message?: string | null; cause?: ProtoFailureInfo | null };
type ProtoTimestamp = { seconds?: { toString(): string } | number | null; nanos?: number | null } | null | undefined;

function innermostProtoMessage(f: ProtoFailureInfo | null | undefined): string | undefined {
  let message: string | undefined;
  for (let e = f; e; e = e.cause) if (e.message) message = e.message;
  return message;
}

function timestampDate(ts: ProtoTimestamp): Date | undefined {
  if (!ts || ts.seconds === null || ts.seconds === undefined) return undefined;
  return new Date(Number(ts.seconds.toString()) * 1000 + (ts.nanos ?? 0) / 1e6);
}

/**
 * The row id of a per-class child workflow (`<audit>/flow-2`, `<audit>/flow-2-repair1`: the ids
 * workflows/audit.ts gives them) -> `flow[2]`, or of a class group's (`<audit>/flow-0-4`) ->
 * `flow[0-4]`; undefined for any other id.
 */
export function childRowId(childWorkflowId: string, auditWorkflowId: string): string | undefined {
  if (!childWorkflowId.startsWith(`${auditWorkflowId}/`)) return undefined;
  const m = /^(.+?)-(\d+)(?:-(\d+))?(?:-repair\d+)?$/.exec(childWorkflowId.slice(auditWorkflowId.length + 1));
  return m ? `${m[1]}[${m[2]}${m[3] !== undefined ? `-${m[3]}` : ''}]` : undefined;
}

/** The class rows a child's row id stands for: `flow[0-2]` -> flow[0], flow[1], flow[2]; `flow[3]` -> itself. */
function memberRows(row: string): string[] {
  const m = /^(.+)\[(\d+)-(\d+)\]$/.exec(row);
  if (!m) return [row];
  const out: string[] = [];
  for (let y = Number(m[2]); y <= Number(m[3]); y++) out.push(`${m[1]}[${y}]`);
  return out;
}

/**
 * Labels (progress row ids) of an audit's activities, by activity id, read from the summaries
 * the workflow gives them (`<row id>: computing on ...`, workflows/stage.ts): activity ids are
 * sequence numbers, and two rows can run the same stage (`ingest`, `ingest-test`).
 */
export class ActivityLabels {
  /** Undefined for an id the history has no summary for (asked once). */
  private readonly labels = new Map<string, string | undefined>();
  constructor(private readonly handle: WorkflowHandle) {}

  async of(activityId: string): Promise<string | undefined> {
    if (!this.labels.has(activityId)) await this.load();
    if (!this.labels.has(activityId)) this.labels.set(activityId, undefined);
    return this.labels.get(activityId);
  }

  private async load(): Promise<void> {
    const history = await this.handle.fetchHistory();
    const converter = this.handle.client.options.loadedDataConverter;
    for (const event of history.events ?? []) {
      const id = event.activityTaskScheduledEventAttributes?.activityId;
      const summary = event.userMetadata?.summary;
      if (!id || !summary || this.labels.has(id)) continue;
      // Summaries go through the payload codecs (encrypted) like every other payload.
      let payload = summary as Payload;
      for (const codec of [...converter.payloadCodecs].reverse()) [payload] = await codec.decode([payload]);
      const text: unknown = converter.payloadConverter.fromPayload(payload);
      if (typeof text === 'string' && text.includes(': ')) this.labels.set(id, text.slice(0, text.indexOf(': ')));
    }
  }
}

/** How many per-class child workflows pendingRetries describes at once. */
const CHILD_DESCRIBES_AT_ONCE = 8;

/** The stages of an audit whose activity waits for (or runs) a retry, by row id, from describe(). */
export async function pendingRetries(handle: WorkflowHandle, labels = new ActivityLabels(handle)): Promise<Map<string, StageRetry>> {
  const out = new Map<string, StageRetry>();
  const retryOf = (a: PendingActivity): StageRetry | undefined => {
    const attempt = a.attempt ?? 1;
    if (attempt < 2) return undefined;
    const next = timestampDate(a.nextAttemptScheduleTime);
    const lastFailure = innermostProtoMessage(a.lastFailure);
    return {
      attempt,
      running: decodePendingActivityState(a.state) === 'STARTED',
      ...(a.maximumAttempts ? { maximumAttempts: a.maximumAttempts } : {}),
      ...(lastFailure ? { lastFailure } : {}),
      ...(next && next.getTime() > Date.now() ? { nextAttemptAt: next } : {}),
    };
  };
  const d = await handle.describe();
  for (const a of d.raw.pendingActivities ?? []) {
    const retry = retryOf(a);
    const label = retry && a.activityId ? ((await labels.of(a.activityId).catch(() => undefined)) ?? a.activityType?.name) : undefined;
    if (retry && label) out.set(label, retry);
  }
  // Per-class stages run in child workflows, each with its one activity.
  // A few at a time: an audit of many classes has a running child per class, and this runs every poll.
  await pMap(
    d.raw.pendingChildren ?? [],
    async (c) => {
      const row = c.workflowId ? childRowId(c.workflowId, handle.workflowId) : undefined;
      if (!row || !c.workflowId) return;
      const child = await handle.client
        .getHandle(c.workflowId)
        .describe()
        .catch(() => undefined);
      for (const a of child?.raw.pendingActivities ?? []) {
        const retry = retryOf(a);
        if (retry) for (const r of memberRows(row)) out.set(r, retry);
      }
    },
    { concurrency: CHILD_DESCRIBES_AT_ONCE },
  );
  return out;
}

const isFinished = (r: StageProgress) => r.state === 'done' || r.state === 'cached' || r.state === 'failed';

/** The progress table with each pending retry attached to its row. */
export function withRetries(p: AuditProgress, retries: Map<string, StageRetry> | undefined): ShownProgress {
  if (!retries?.size) return p;
  return { ...p, stages: p.stages.map((r) => (retries.has(r.id) && !isFinished(r) ? { ...r, retry: retries.get(r.id) } : r)) };
}

/**
 * Polls progress (and pending retries) until the workflow closes, shows the final table, and
 * returns its result or rejects with the workflow's failure. `onProgress` sees every snapshot
 * (undefined while no worker answers). When `signal` aborts, polling stops and the promise
 * rejects with `signal.reason`.
 */
export async function followAudit(
  handle: AuditHandle,
  onProgress: (p: ShownProgress | undefined) => void,
  intervalMs = 1000,
  signal?: AbortSignal,
): Promise<AuditResult> {
  let settled = false;
  const result = handle.result().finally(() => {
    settled = true;
  });
  result.catch(() => undefined);
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (stop = r));
  const onAbort = () => stop();
  signal?.addEventListener('abort', onAbort, { once: true });
  const labels = new ActivityLabels(handle);
  const closed = result.then(
    () => undefined,
    () => undefined,
  );
  try {
    while (!settled && !signal?.aborted) {
      const p = await Promise.race([
        Promise.all([queryProgress(handle), pendingRetries(handle, labels).catch(() => undefined)]),
        closed,
        stopped,
      ]);
      if (settled || signal?.aborted) break;
      if (p) onProgress(p[0] && withRetries(p[0], p[1]));
      await Promise.race([new Promise((r) => setTimeout(r, intervalMs)), closed, stopped]);
    }
    if (signal?.aborted) throw signal.reason;
    // The result carries references only; the final table (also of a failed run) comes from a
    // query of the closed run, which waits for a worker: bounded, as none may be left.
    const final = await result.then(
      () => queryProgress(handle, QUERY_WAIT_MS),
      () => queryProgress(handle, QUERY_WAIT_MS),
    );
    if (final) onProgress(final);
    return await result;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

// ---- failures: from the workflow's failure chain to one line a person can act on ----

/** Failure types that no retry can fix: the input is wrong (a CorruptArtifact here outlived its repairs). */
export const BAD_INPUT_FAILURES: readonly string[] = ['DatasetError', 'PipelineInputError', 'PseudoFileSystemError', CORRUPT_ARTIFACT];

export interface AuditFailure {
  workflowId: string;
  /** The progress row that failed (`ingest`, `flow[2]`), when known. */
  stage?: string;
  /** The innermost message of the failure chain: what went wrong (a DatasetError names the file). */
  message: string;
  /** The failure's type: an ApplicationFailure's type (DatasetError, Error...), else Cancelled, Terminated, Timeout. */
  type: string;
  /** True for BAD_INPUT_FAILURES. */
  badInput: boolean;
}

/** An audit workflow that closed without a result. */
export class AuditFailedError extends Error {
  constructor(readonly failure: AuditFailure) {
    super(failure.stage ? `${failure.stage}: ${failure.message}` : failure.message);
    this.name = 'AuditFailedError';
  }
}

/**
 * Walks a closed audit's failure (WorkflowFailedError -> ChildWorkflowFailure / ActivityFailure
 * -> ApplicationFailure ...) down to its root cause, and names the stage it happened in: the
 * failed row of `progress` with that message when a worker answered the query, else the child
 * workflow's class or the activity's label from the history.
 */
export async function explainFailure(handle: WorkflowHandle, err: unknown, progress?: AuditProgress): Promise<AuditFailure> {
  let e: unknown = err instanceof WorkflowFailedError ? (err.cause ?? err) : err;
  let child: string | undefined;
  let activity: ActivityFailure | undefined;
  for (;;) {
    if (e instanceof ChildWorkflowFailure) child ??= childRowId(e.execution.workflowId ?? '', handle.workflowId);
    else if (e instanceof ActivityFailure && !child) activity ??= e;
    if (!(e instanceof Error) || !(e.cause instanceof Error)) break;
    e = e.cause;
  }
  const root = e instanceof Error ? e : new Error(String(e));
  const type =
    root instanceof ApplicationFailure
      ? (root.type ?? 'Error')
      : root instanceof CancelledFailure
        ? 'Cancelled'
        : root instanceof TerminatedFailure
          ? 'Terminated'
          : root instanceof TimeoutFailure
            ? `Timeout (${root.timeoutType})`
            : root.name;
  const message =
    root instanceof TerminatedFailure ? `terminated${root.message ? `: ${root.message}` : ''}` : root.message || type.toLowerCase();
  const failedRow = progress?.stages.find((r) => r.state === 'failed' && r.error === message);
  const activityId = activity?.activityId;
  const label = activityId ? await new ActivityLabels(handle).of(activityId).catch(() => undefined) : undefined;
  const stage = failedRow?.id ?? child ?? label ?? activity?.activityType;
  return { workflowId: handle.workflowId, ...(stage ? { stage } : {}), message, type, badInput: BAD_INPUT_FAILURES.includes(type) };
}
