// The audit without Temporal: the same DAG (workflows/dag.ts) and the same stage engine, run
// in this process against an artifact store. The library entry point for users without a
// Temporal server, and the reference the Temporal pipeline must agree with. Cached and
// resumable like the pipeline: a second run with the same store reuses every stage.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ArtifactStore } from '../data/artifacts.js';
import type { AuditReport, CleansedEntry } from '../ml/audit-report.js';
import type { ClassDetection } from '../ml/detect.js';
import type { Matrix } from '../ml/matrix.js';
import { runAuditDag, type StageExecutor } from '../workflows/dag.js';
import type { StageName } from '../workflows/graph.js';
import type { Pipeline, StageOutcome } from '../workflows/types.js';
import { StageEngine } from './engine.js';
import { readMatrix } from './io.js';
import { readCleansed, readDetections } from './stages/common.js';
import { STAGE_IMPLS } from './stages/index.js';

export interface InProcessOptions {
  /** Artifact store folder (reused across runs: unchanged stages are cache hits). */
  store: string;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Called when a stage (node id) starts and when it ends. */
  onStage?: (id: string, event: 'start' | 'end', outcome?: StageOutcome) => void;
  /** Checkpoint training stages every this many epochs (default 1). */
  checkpointEvery?: number;
}

export interface InProcessResult {
  report: AuditReport;
  cleansed: CleansedEntry[];
  /** N x C log-densities (step 5), for analyses beyond the report. */
  density: Matrix;
  detections: ClassDetection[];
  /** Every node's outcome (artifact reference, facts, cached or computed), by node id. */
  outcomes: Record<string, StageOutcome>;
  store: ArtifactStore;
}

/** Runs the whole audit a pipeline describes in this process; writes its outputs like the pipeline does. */
export async function auditDataset(pipeline: Pipeline, options: InProcessOptions): Promise<InProcessResult> {
  const store = new ArtifactStore(options.store);
  const engine = new StageEngine(store, STAGE_IMPLS);
  const log = options.log ?? (() => undefined);
  // One failed node stops the others at their next batch, as a failed workflow's would be.
  const stop = new AbortController();
  const onAbort = () => stop.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const executor: StageExecutor = {
    run: async (id: string, stage: StageName, params: unknown, inputs) => {
      options.onStage?.(id, 'start');
      const request = { stage, label: id, params, inputs, options: { checkpointEvery: options.checkpointEvery ?? 1 } };
      const out = await engine.run(request, {
        attempt: 1,
        heartbeat: () => undefined,
        log,
        signal: stop.signal,
      });
      if (out.cached) log(`${id}: cache hit (key ${out.ref.key.slice(0, 12)}) ${out.info.figure}`);
      options.onStage?.(id, 'end', out);
      return out;
    },
    // A grouped per-class stage (the flows): each group's misses computed together.
    runClassGroup: async (id, stage, members, inputs) => {
      members.forEach((m) => options.onStage?.(m.id, 'start'));
      const runOptions = { checkpointEvery: options.checkpointEvery ?? 1 };
      const request = {
        stage,
        label: id,
        members: members.map((m) => ({ stage, label: m.id, params: m.params, inputs, options: runOptions })),
        options: runOptions,
      };
      const outs = await engine.runGroup(request, { attempt: 1, heartbeat: () => undefined, log, signal: stop.signal });
      outs.forEach((out, i) => {
        if (out.cached) log(`${members[i].id}: cache hit (key ${out.ref.key.slice(0, 12)}) ${out.info.figure}`);
        options.onStage?.(members[i].id, 'end', out);
      });
      return outs;
    },
  };
  let outcomes: Record<string, StageOutcome>;
  try {
    ({ outcomes } = await runAuditDag(pipeline, executor));
  } catch (err) {
    stop.abort(err);
    throw err;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
  const dir = (id: string) => store.dir(outcomes[id].ref);
  return {
    report: JSON.parse(await readFile(join(dir('report'), 'report.json'), 'utf8')) as AuditReport,
    cleansed: await readCleansed(dir('report')),
    density: await readMatrix(dir('density'), 'density'),
    detections: await readDetections(dir('detect')),
    outcomes,
    store,
  };
}
