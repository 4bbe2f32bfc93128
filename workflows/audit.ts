// The audit as a Temporal workflow: the one orchestration (workflows/dag.ts) with an executor
// that probes the cache with a local activity, runs a miss as its stage's activity on its
// queue, fans per-class stages out as child workflows, and keeps the progress table, memo and
// search attributes that the CLI and the UI show. Deterministic: no I/O, clocks or randomness.
//
// Versioning: a change here that alters the commands an in-flight audit has already recorded
// goes behind `patched('<change-id>')`; test/replay.test.ts replays recorded histories against
// this code so that a change that forgets it fails CI.
import {
  ApplicationFailure,
  executeChild,
  patched,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { AuditInputError, runAuditDag, type ClassInstance, type StageExecutor } from './dag.js';
import { datasetKey, progressQuery, stageEpochSignal, stageKey, targetClassesKey, verdictKey } from './definitions.js';
import { corruptArtifactKey, failureMessage, ProgressTable, runStage, runStageGroup, type StageContext } from './stage.js';
import type { AuditResult, ClassGroupInput, ClassStageInput, Pipeline, StageName, StageOutcome, StageRequest } from './types.js';

export async function auditWorkflow(pipeline: Pipeline): Promise<AuditResult> {
  const info = workflowInfo();
  const { temporal } = pipeline;
  const datasetName = pipeline.dataset.name ?? pipeline.name;
  const progress = new ProgressTable({ workflowId: info.workflowId, pipeline: pipeline.name, dataset: datasetName });
  setHandler(progressQuery, () => progress.snapshot());
  setHandler(stageEpochSignal, (u) => progress.epoch(u));
  upsertMemo({ pipeline: pipeline.name, pipelineFile: pipeline.file });
  upsertSearchAttributes([
    { key: datasetKey, value: datasetName },
    { key: verdictKey, value: 'running' },
  ]);
  const ctx: StageContext = {
    temporal,
    progress,
    onStart: (stage) => upsertSearchAttributes([{ key: stageKey, value: stage }]),
  };
  // Flow groups (issue 12): a child workflow per group of classes instead of one per class.
  // Asked first, before any command: audits recorded before it replay without the marker and
  // keep their per-class children.
  const grouped = patched('flow-groups');

  const executor: StageExecutor = {
    run: (id, stage, params, inputs) => runStage(ctx, id, stage, params, inputs),
    runPerClass: (id, stage, y, className, params, inputs, attempt) =>
      classStage(pipeline, datasetName, progress, { id, stage, className, params, inputs, attempt, classIndex: y }),
    ...(grouped
      ? {
          runClassGroup: (id: string, stage: StageName, members: ClassInstance[], inputs: StageRequest['inputs'], attempt: number) =>
            classGroup(pipeline, datasetName, progress, { id, stage, members, inputs, attempt }),
        }
      : {}),
    plan: (rows) => {
      for (const r of rows) progress.plan(r.id, r.stage);
      progress.publish();
    },
    completed: (id, stage, out) => {
      if (stage !== 'detect') return;
      const classes = out.info.classes ?? [];
      progress.targetClasses = (out.info.targetClasses ?? []).map((y) => classes[y] ?? String(y));
      progress.verdict = progress.targetClasses.length ? 'poisoned' : 'clean';
      upsertSearchAttributes([
        { key: targetClassesKey, value: progress.targetClasses },
        { key: verdictKey, value: progress.verdict },
      ]);
    },
    corruptArtifact: corruptArtifactKey,
    runInfo: {
      workflowId: info.workflowId,
      namespace: info.namespace,
      ...(pipeline.temporal.uiUrl ? { uiUrl: pipeline.temporal.uiUrl } : {}),
    },
  };

  try {
    const { outcomes } = await runAuditDag(pipeline, executor);
    const report = outcomes.report;
    const summary = report?.info.summary;
    if (!summary) throw ApplicationFailure.nonRetryable('report stage returned no summary', 'PipelineInputError');
    progress.currentStage = 'done';
    progress.done = true;
    upsertSearchAttributes([{ key: stageKey, value: 'done' }]);
    progress.publish();
    return { workflowId: info.workflowId, summary, reportRef: report.ref, outputs: report.info.outputs ?? [] };
  } catch (err) {
    progress.verdict = 'failed';
    progress.done = true;
    upsertSearchAttributes([{ key: verdictKey, value: 'failed' }]);
    progress.publish();
    // A plain Error would fail the workflow task and be retried forever: say it cannot succeed.
    if (err instanceof AuditInputError) throw ApplicationFailure.nonRetryable(err.message, err.name);
    throw err;
  }
}

interface ClassStageRun {
  id: string;
  stage: StageName;
  classIndex: number;
  className: string;
  params: unknown;
  inputs: StageRequest['inputs'];
  /** Repairs of this instance so far (each needs a fresh child workflow id). */
  attempt: number;
}

/** Starts the child workflow of one class's instance, and mirrors its state in the parent's table. */
async function classStage(pipeline: Pipeline, datasetName: string, progress: ProgressTable, r: ClassStageRun): Promise<StageOutcome> {
  const info = workflowInfo();
  const request: StageRequest = { stage: r.stage, label: r.id, params: r.params, inputs: { ...r.inputs } };
  const input: ClassStageInput = { request, className: r.className, temporal: pipeline.temporal, datasetName };
  const t = pipeline.temporal;
  progress.update(r.id, r.stage, { state: 'running', queue: t.taskQueues[t.stageQueues[r.stage]] });
  try {
    const out = await executeChild(classStageWorkflow, {
      workflowId: `${info.workflowId}/${r.stage}-${r.classIndex}${r.attempt ? `-repair${r.attempt}` : ''}`,
      args: [input],
      typedSearchAttributes: [
        { key: datasetKey, value: datasetName },
        { key: stageKey, value: r.stage },
      ],
      memo: { pipeline: pipeline.name, class: r.className },
      staticSummary: `${r.stage} for class ${r.classIndex} (${r.className})`,
    });
    progress.update(r.id, r.stage, { state: out.cached ? 'cached' : 'done', seconds: out.seconds, figure: out.info.figure });
    return out;
  } catch (err) {
    progress.update(r.id, r.stage, { state: 'failed', error: failureMessage(err) });
    throw err;
  }
}

/** One class's instance of a per-class stage: its own workflow, so its history, retries and timing are inspectable alone. */
export async function classStageWorkflow(input: ClassStageInput): Promise<StageOutcome> {
  const info = workflowInfo();
  const { request, className, temporal, datasetName } = input;
  const progress = new ProgressTable({ workflowId: info.workflowId, pipeline: `${request.stage} for ${className}`, dataset: datasetName });
  setHandler(progressQuery, () => progress.snapshot());
  setHandler(stageEpochSignal, (u) => progress.epoch(u));
  progress.plan(request.label, request.stage);
  const out = await runStage({ temporal, progress }, request.label, request.stage, request.params, request.inputs);
  progress.done = true;
  progress.publish();
  return out;
}

interface ClassGroupRun {
  /** `flow[0-4]`. */
  id: string;
  stage: StageName;
  members: ClassInstance[];
  inputs: StageRequest['inputs'];
  /** Repairs of this group so far (each needs a fresh child workflow id). */
  attempt: number;
}

/** Starts the child workflow of a group of classes' instances, and mirrors its members' rows in the parent's table. */
async function classGroup(pipeline: Pipeline, datasetName: string, progress: ProgressTable, r: ClassGroupRun): Promise<StageOutcome[]> {
  const info = workflowInfo();
  const t = pipeline.temporal;
  const first = r.members[0].classIndex;
  const last = r.members[r.members.length - 1].classIndex;
  const input: ClassGroupInput = {
    label: r.id,
    stage: r.stage,
    members: r.members.map((m) => ({ stage: r.stage, label: m.id, params: m.params, inputs: { ...r.inputs } })),
    classNames: r.members.map((m) => m.className),
    temporal: t,
    datasetName,
  };
  for (const m of r.members) progress.update(m.id, r.stage, { state: 'running', queue: t.taskQueues[t.stageQueues[r.stage]] });
  try {
    const outs = await executeChild(classGroupWorkflow, {
      workflowId: `${info.workflowId}/${r.stage}-${first}-${last}${r.attempt ? `-repair${r.attempt}` : ''}`,
      args: [input],
      typedSearchAttributes: [
        { key: datasetKey, value: datasetName },
        { key: stageKey, value: r.stage },
      ],
      memo: { pipeline: pipeline.name, classes: input.classNames.join(', ') },
      staticSummary: `${r.stage} for classes ${first}-${last}, trained together`,
    });
    outs.forEach((out, i) =>
      progress.update(r.members[i].id, r.stage, { state: out.cached ? 'cached' : 'done', seconds: out.seconds, figure: out.info.figure }),
    );
    return outs;
  } catch (err) {
    for (const m of r.members) progress.update(m.id, r.stage, { state: 'failed', error: failureMessage(err) });
    throw err;
  }
}

/** A group of classes' instances of a grouped per-class stage: its own workflow, one activity for the group's cache misses. */
export async function classGroupWorkflow(input: ClassGroupInput): Promise<StageOutcome[]> {
  const info = workflowInfo();
  const { label, stage, members, temporal, datasetName } = input;
  const progress = new ProgressTable({
    workflowId: info.workflowId,
    pipeline: `${stage} for ${input.classNames.join(', ')}`,
    dataset: datasetName,
  });
  setHandler(progressQuery, () => progress.snapshot());
  setHandler(stageEpochSignal, (u) => progress.epoch(u));
  progress.plan(label, stage);
  for (const m of members) progress.plan(m.label, stage);
  const outs = await runStageGroup({ temporal, progress }, label, stage, members);
  progress.done = true;
  progress.publish();
  return outs;
}
