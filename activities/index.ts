// Temporal activities: the stage engine (activities/engine.ts) bound to Temporal. One activity
// per stage of the graph plus the cache probe; each lends the engine the activity's heartbeat,
// cancellation signal and attempt, sends epoch progress to the workflow as a signal, and turns
// the engine's typed failures into non-retryable ApplicationFailures.
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { ArtifactStore } from '../data/artifacts.js';
import { stageEpochSignal } from '../workflows/definitions.js';
import { STAGES, type StageName } from '../workflows/graph.js';
import {
  CORRUPT_ARTIFACT,
  NON_RETRYABLE,
  type EpochUpdate,
  type ProbeResult,
  type StageGroupRequest,
  type StageOutcome,
  type StageRequest,
} from '../workflows/types.js';
import { StageEngine } from './engine.js';
import { CorruptArtifactError, type StageRuntime } from './stage.js';
import { STAGE_IMPLS } from './stages/index.js';

export interface ActivityDeps {
  store: ArtifactStore;
  /** Used to send epoch updates to the workflow's `progress` table; without it only heartbeats are sent. */
  client?: Client;
  /** Where activity log lines go (default: the activity logger). */
  log?: (line: string) => void;
}

type StageActivity = (req: StageRequest) => Promise<StageOutcome>;
export type AuditActivities = {
  probe: (req: StageRequest) => Promise<ProbeResult>;
  /** The misses of a group of a grouped per-class stage, computed together (engine.runGroup). */
  stageGroup: (req: StageGroupRequest) => Promise<StageOutcome[]>;
} & Record<StageName, StageActivity>;

export function createActivities(deps: ActivityDeps): AuditActivities {
  const engine = new StageEngine(deps.store, STAGE_IMPLS);
  engine.preloadEveryRun();
  const log = (line: string) => (deps.log ? deps.log(line) : Context.current().log.info(line));

  /** Progress display only: a lost update never fails the stage, and waiting for one is bounded. */
  function sendEpoch(req: Pick<StageRequest, 'reportTo'>, update: EpochUpdate): Promise<void> {
    if (!deps.client || !req.reportTo) return Promise.resolve();
    const sent = deps.client.workflow
      .getHandle(req.reportTo)
      .signal(stageEpochSignal, update)
      .catch(() => undefined);
    return Promise.race([sent, new Promise<void>((r) => setTimeout(r, 5000).unref())]);
  }

  function runtime(req: Pick<StageRequest, 'reportTo'>): StageRuntime {
    const ctx = Context.current();
    return {
      signal: ctx.cancellationSignal,
      attempt: ctx.info.attempt,
      lastHeartbeat: ctx.info.heartbeatDetails,
      heartbeat: (details) => ctx.heartbeat(details),
      ...(ctx.info.heartbeatTimeoutMs ? { heartbeatTimeoutMs: ctx.info.heartbeatTimeoutMs } : {}),
      log,
      epoch: (update) => sendEpoch(req, update),
    };
  }

  const activity =
    (stage: StageName): StageActivity =>
    (req) =>
      temporalFailures(engine.run({ ...req, stage }, runtime(req)));
  const stages = Object.fromEntries(STAGES.map((s) => [s, activity(s)])) as Record<StageName, StageActivity>;
  return {
    probe: (req) => temporalFailures(engine.probe(req)),
    // Each member carries the key its probe computed (engine.keyOf takes it).
    stageGroup: (req) => temporalFailures(engine.runGroup(req, runtime(req))),
    ...stages,
  };
}

/** A corrupted input names its key for the workflow, which has the producer run again. */
async function temporalFailures<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (err instanceof CorruptArtifactError) {
      throw ApplicationFailure.create({ type: CORRUPT_ARTIFACT, message: err.message, details: [err.key], nonRetryable: true });
    }
    // An AbortError stays as it is: the SDK reports it as the activity's cancellation (a
    // cancelled audit, a worker shutting down, whose stage another worker retries).
    if (err instanceof Error && err.name === 'AbortError') throw err;
    // The SDK would name the failure after the error's class (StageInputError), not its `name`
    // (PipelineInputError), which the retry policy and the CLI's exit codes read: name it here,
    // and mark as final what no retry can fix.
    if (err instanceof Error && (NON_RETRYABLE.includes(err.name) || (err as { nonRetryable?: unknown }).nonRetryable === true)) {
      throw ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true });
    }
    throw err;
  }
}
