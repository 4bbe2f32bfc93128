// The audit DAG as a Temporal workflow (deterministic: no I/O, no clocks, no randomness here).
// ingest -> [attack] -> encoder -> features -> flow per class (child workflows, in parallel)
// -> density -> detect -> relabel -> [retrain] -> [evaluate] -> report. Only ArtifactRefs and
// small facts travel through Temporal; the bytes stay in the artifact store.
import { executeChild, log, setHandler, upsertMemo, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { datasetKey, progressQuery, stageEpochSignal, stageKey, targetClassesKey, verdictKey } from './definitions.js';
import { corruptArtifactKey, ProgressTable, runStage, type StageContext } from './stage.js';
import { classifierStem } from '../ml/config.js';
import type {
  ArtifactRef,
  AuditResult,
  ClassFlowInput,
  DetectParams,
  EncoderParams,
  EvaluateParams,
  FeaturesParams,
  FlowParams,
  IngestParams,
  Pipeline,
  RelabelParams,
  ReportParams,
  RetrainParams,
  StageName,
  StageOutcome,
  StageRequest,
} from './types.js';

/** Images per forward pass when extracting features (not part of the method's config). */
const FEATURE_BATCH = 128;
/** How often one consumer may trigger the recomputation of a corrupted input. */
const MAX_REPAIRS = 2;

export async function auditWorkflow(pipeline: Pipeline): Promise<AuditResult> {
  const info = workflowInfo();
  const { audit, temporal } = pipeline;
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
  const plan: [string, StageName][] = [['ingest', 'ingest']];
  if (pipeline.testSet) plan.push(['ingest-test', 'ingest']);
  if (pipeline.attack) plan.push(['attack', 'attack']);
  plan.push(['encoder', 'encoder'], ['features', 'features'], ['density', 'density'], ['detect', 'detect'], ['relabel', 'relabel']);
  if (audit.retrain) plan.push(['retrain', 'retrain']);
  if (pipeline.attack || (audit.retrain && pipeline.testSet)) plan.push(['evaluate', 'evaluate']);
  plan.push(['report', 'report']);
  for (const [id, stage] of plan) progress.plan(id, stage);
  progress.publish();

  // Who produced each artifact key, so that a consumer that finds its input corrupted can
  // have it recomputed (the probe of the producer quarantines and rebuilds it).
  const producers = new Map<string, () => Promise<StageOutcome>>();
  const timings: Record<string, number> = {};

  async function stage(
    id: string,
    name: StageName,
    params: unknown,
    inputs: Record<string, ArtifactRef>,
    produce?: () => Promise<StageOutcome>,
  ): Promise<StageOutcome> {
    const run = produce ?? (() => runStage(ctx, id, name, params, inputs));
    for (let repairs = 0; ; repairs++) {
      try {
        const out = await run();
        producers.set(out.ref.key, run);
        timings[id] = out.seconds;
        return out;
      } catch (err) {
        const key = corruptArtifactKey(err);
        const producer = key === undefined ? undefined : producers.get(key);
        if (!producer || repairs >= MAX_REPAIRS) throw err;
        log.warn(`${id}: input artifact ${key} failed its hash check; recomputing it`);
        const fresh = await producer();
        for (const role of Object.keys(inputs)) if (inputs[role].key === key) inputs[role] = fresh.ref;
      }
    }
  }

  try {
    const ingestParams = (source: Pipeline['dataset']['source'], limitPerClass?: number, name?: string): IngestParams => ({
      source,
      imageSize: pipeline.dataset.imageSize,
      ...(limitPerClass !== undefined ? { limitPerClass } : {}),
      ...(name !== undefined ? { name } : {}),
    });
    const clean = await stage(
      'ingest',
      'ingest',
      ingestParams(pipeline.dataset.source, pipeline.dataset.limitPerClass, pipeline.dataset.name),
      {},
    );
    const classes = clean.info.classes ?? [];
    if (classes.length < 2) throw new Error(`ingest reported ${classes.length} classes; an audit needs at least 2`);
    classes.forEach((_, y) => progress.plan(`flow[${y}]`, 'flow'));
    // The test set is only needed at the end: ingest it alongside the encoder.
    const testSet = pipeline.testSet;
    const testPromise = testSet
      ? stage('ingest-test', 'ingest', ingestParams(testSet.source, testSet.limitPerClass, testSet.name), {})
      : undefined;
    testPromise?.catch(() => undefined); // awaited below; keeps an early failure from going unobserved

    const attack = pipeline.attack ? await stage('attack', 'attack', { attack: pipeline.attack }, { dataset: clean.ref }) : undefined;
    const train = attack ?? clean;

    const encoderParams: EncoderParams =
      audit.encoder.kind === 'simclr'
        ? { kind: 'simclr', config: audit.encoder, seed: audit.seed, backend: audit.backend }
        : { kind: 'pretrained', path: audit.encoder.path, imageSize: audit.imageSize };
    const encoder = await stage('encoder', 'encoder', encoderParams, { dataset: train.ref });
    const features = await stage('features', 'features', { backend: audit.backend, batchSize: FEATURE_BATCH } satisfies FeaturesParams, {
      encoder: encoder.ref,
      dataset: train.ref,
    });

    // One child workflow per class, all at once: each class's flow has its own history.
    const flows = await Promise.all(
      classes.map((className, y) => {
        const params: FlowParams = { classIndex: y, config: audit.flow, seed: audit.seed + y, backend: audit.backend };
        const inputs = { features: features.ref, dataset: train.ref };
        let attempt = 0;
        const produce = () => classFlow(pipeline, datasetName, progress, className, params, inputs, attempt++);
        return stage(`flow[${y}]`, 'flow', params, inputs, produce);
      }),
    );

    const densityInputs: Record<string, ArtifactRef> = { features: features.ref };
    flows.forEach((f, y) => (densityInputs[`flow-${y}`] = f.ref));
    const density = await stage('density', 'density', { classes: classes.length }, densityInputs);
    const detect = await stage('detect', 'detect', { config: audit.detection } satisfies DetectParams, {
      density: density.ref,
      dataset: train.ref,
    });
    const targets = detect.info.targetClasses ?? [];
    progress.targetClasses = targets.map((y) => classes[y] ?? String(y));
    progress.verdict = targets.length ? 'poisoned' : 'clean';
    upsertSearchAttributes([
      { key: targetClassesKey, value: progress.targetClasses },
      { key: verdictKey, value: progress.verdict },
    ]);

    const relabel = await stage('relabel', 'relabel', { config: audit.relabel } satisfies RelabelParams, {
      density: density.ref,
      detect: detect.ref,
      dataset: train.ref,
    });

    let retrain: StageOutcome | undefined;
    if (audit.retrain) {
      const stem = classifierStem(audit);
      const params: RetrainParams = { config: audit.retrain, seed: audit.seed, stem, imageSize: audit.imageSize, backend: audit.backend };
      retrain = await stage('retrain', 'retrain', params, { dataset: train.ref, relabel: relabel.ref });
    }
    const test = testPromise ? await testPromise : undefined;

    let evaluation: StageOutcome | undefined;
    if (pipeline.attack || (retrain && test)) {
      const inputs: Record<string, ArtifactRef> = { relabel: relabel.ref, detect: detect.ref, dataset: train.ref };
      if (attack) inputs.attack = attack.ref;
      if (retrain) inputs.model = retrain.ref;
      if (test) inputs.test = test.ref;
      const params: EvaluateParams = { seed: audit.seed, backend: audit.backend, ...(pipeline.attack ? { attack: pipeline.attack } : {}) };
      evaluation = await stage('evaluate', 'evaluate', params, inputs);
    }

    const reportInputs: Record<string, ArtifactRef> = {
      dataset: train.ref,
      detect: detect.ref,
      relabel: relabel.ref,
      features: features.ref,
    };
    if (evaluation) reportInputs.evaluate = evaluation.ref;
    const reportParams: ReportParams = { output: pipeline.output, config: audit, timings: { ...timings } };
    const report = await runStage(ctx, 'report', 'report', reportParams, reportInputs, { probe: false });
    const reportInfo = report.info;
    progress.currentStage = 'done';
    progress.done = true;
    upsertSearchAttributes([{ key: stageKey, value: 'done' }]);
    progress.publish();
    if (!reportInfo.report) throw new Error('report stage returned no report');
    return { report: reportInfo.report, reportRef: report.ref, outputs: reportInfo.outputs ?? [], progress: progress.snapshot() };
  } catch (err) {
    progress.verdict = 'failed';
    progress.done = true;
    upsertSearchAttributes([{ key: verdictKey, value: 'failed' }]);
    progress.publish();
    throw err;
  }
}

/** Starts the child workflow that fits class `y`'s flow, and mirrors its state in the parent's table. */
async function classFlow(
  pipeline: Pipeline,
  datasetName: string,
  progress: ProgressTable,
  className: string,
  params: FlowParams,
  inputs: Record<string, ArtifactRef>,
  attempt: number,
): Promise<StageOutcome> {
  const info = workflowInfo();
  const y = params.classIndex;
  const id = `flow[${y}]`;
  const request: StageRequest<FlowParams> = { stage: 'flow', label: id, params, inputs: { ...inputs } };
  const input: ClassFlowInput = { request, className, temporal: pipeline.temporal, datasetName };
  progress.update(id, 'flow', { state: 'running', queue: pipeline.temporal.taskQueues[pipeline.temporal.stageQueues.flow] });
  try {
    const out = await executeChild(classFlowWorkflow, {
      // A repair (attempt > 0) needs a fresh id: the first child of this run has completed.
      workflowId: `${info.workflowId}/flow-${y}${attempt ? `-repair${attempt}` : ''}`,
      args: [input],
      typedSearchAttributes: [
        { key: datasetKey, value: datasetName },
        { key: stageKey, value: 'flow' },
      ],
      memo: { pipeline: pipeline.name, class: className },
      staticSummary: `flow for class ${y} (${className})`,
    });
    progress.update(id, 'flow', { state: out.cached ? 'cached' : 'done', seconds: out.seconds, figure: out.info.figure });
    return out;
  } catch (err) {
    progress.update(id, 'flow', { state: 'failed' });
    throw err;
  }
}

/** One class's flow: its own workflow, so its history, retries and timing are inspectable on their own. */
export async function classFlowWorkflow(input: ClassFlowInput): Promise<StageOutcome> {
  const info = workflowInfo();
  const { request, className, temporal, datasetName } = input;
  const progress = new ProgressTable({ workflowId: info.workflowId, pipeline: `flow for ${className}`, dataset: datasetName });
  setHandler(progressQuery, () => progress.snapshot());
  setHandler(stageEpochSignal, (u) => progress.epoch(u));
  progress.plan(request.label, 'flow');
  const out = await runStage({ temporal, progress }, request.label, 'flow', request.params, request.inputs);
  progress.done = true;
  progress.publish();
  return out;
}
