// The audit as data: every stage declared once (what it is, how Temporal runs it), and the DAG
// of one audit (which stage runs, on which inputs, with which parameters). Both executors walk
// this table: the Temporal workflow (workflows/audit.ts) and the in-process one
// (activities/in-process.ts). Adding a stage is one entry in STAGE_SPECS, one node in
// AUDIT_DAG, its parameter type in StageParams (workflows/stage-params.ts), and its function in activities/stages/.
//
// Deterministic and types-only imports: the workflow bundle includes this file.
import type { AttackConfig } from '../attacks/types.js';
import { classifierStem, defenseFeatures, DEFENSE_SECTION, isBackboneOnly, type AuditConfig, type RetrainConfig } from '../ml/config.js';
import type { AuditRunInfo } from '../ml/audit-report.js';
import type { IngestParams, StageParams } from './stage-params.js';
import type { DatasetSource, Pipeline } from './types.js';

export type QueueKind = 'cpu' | 'gpu';

/** How a stage is computed and run, independent of any one audit. */
export interface StageSpec {
  /** Bump when the stage's code changes what it computes: its keys and all downstream keys change. */
  version: number;
  /** The queue that runs it by default (pipelines may override). */
  queue: QueueKind;
  /**
   * Heartbeat timeout, as a duration string: how soon a killed worker's stage is retried. The
   * engine heartbeats every few seconds and training loops every batch, so one batch must take
   * less than this (a pipeline raises it for wide networks on CPU workers).
   */
  heartbeat: string;
  /** Longest honest run of the stage. */
  startToClose: string;
  /**
   * Artifact roles it reads. `role?` is optional; `role*` is one artifact per class
   * (`role-0`, `role-1`, ...).
   */
  inputs: readonly string[];
  /** Runs once per class (Temporal: one child workflow each). */
  perClass?: true;
  /**
   * Its per-class instances run in groups of classes, each group computed together (the stage's
   * `computeGroup`; Temporal: one child workflow and one activity per group), each instance
   * still its own artifact under its own key. Group size: workflows/dag.ts flowGroupSize.
   */
  grouped?: true;
  /** False: always computed (its parameters carry run facts such as timings); no cache probe. */
  cached: boolean;
  /** One line for the stage table in the README and the UI. */
  summary: string;
}

export const STAGE_SPECS = {
  ingest: {
    version: 1,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '12h',
    inputs: [],
    cached: true,
    summary: 'decode, resize and shard a dataset source',
  },
  attack: {
    // 2: LC, ISSBA, Adap-*; preview.png and the ISSBA encoder saved with the poisoned set.
    version: 2,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '12h',
    inputs: ['dataset'],
    cached: true,
    summary: 'poison a clean dataset (benchmarks)',
  },
  lineage: {
    // Resolved at run time, every run (a schedule's pipeline is fixed when it is created): its
    // key is derived from the parent artifacts it finds, so a rerun with the same parent gives
    // the same key, and the encoder and features downstream are cache hits.
    version: 1,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '1h',
    inputs: [],
    cached: false,
    summary: "the previous audit's encoder and features (warm start, reuse), read from its report.json",
  },
  encoder: {
    version: 1,
    queue: 'gpu',
    heartbeat: '30s',
    startToClose: '7d',
    inputs: ['dataset', 'parent?'],
    cached: true,
    summary: 'SimCLR encoder (or a pretrained, ONNX or reused one)',
  },
  features: {
    version: 2,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '24h',
    inputs: ['encoder', 'dataset', 'lineage?'],
    cached: true,
    summary: 'encoder features of every sample',
  },
  flow: {
    // 2: trained through the one training loop (ml/loop.ts) with ml/optim.ts's Adam.
    version: 2,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '24h',
    inputs: ['features', 'dataset'],
    perClass: true,
    grouped: true,
    cached: true,
    summary: "one normalizing flow per class, on that class's features",
  },
  density: {
    version: 1,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '24h',
    inputs: ['features', 'flow*'],
    cached: true,
    summary: 'N x C log-densities of every sample under every flow',
  },
  detect: {
    version: 1,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '1h',
    inputs: ['density', 'dataset'],
    cached: true,
    summary: 'target classes: non-disruptive and disruptive tests',
  },
  classifierFeatures: {
    version: 1,
    queue: 'gpu',
    heartbeat: '30s',
    startToClose: '7d',
    inputs: ['dataset'],
    cached: true,
    summary: "a classifier trained on the dataset's own labels, and its penultimate features of every sample (baselines' setting)",
  },
  relabel: {
    // 2: the split comes from the defense registry and carries `side`.
    version: 2,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '1h',
    inputs: ['density', 'detect', 'dataset', 'features'],
    cached: true,
    summary: 'the defense: poison scores, split, drop / relabel',
  },
  retrain: {
    version: 1,
    queue: 'gpu',
    heartbeat: '30s',
    startToClose: '7d',
    inputs: ['dataset', 'relabel'],
    cached: true,
    summary: 'classifier trained on the cleansed labels',
  },
  evaluate: {
    // 2: reads each entry's side, not its reason text.
    version: 3,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '24h',
    inputs: ['relabel', 'dataset', 'attack?', 'model?', 'test?'],
    cached: true,
    summary: 'TPR/FPR, relabel accuracy, ACC, ASR',
  },
  report: {
    version: 3,
    queue: 'cpu',
    heartbeat: '30s',
    startToClose: '1h',
    inputs: ['dataset', 'detect', 'relabel', 'features', 'density', 'encoder', 'evaluate?', 'attack?'],
    cached: false,
    summary: 'report.json, report.html + cleansed.jsonl, written to the output folder',
  },
} as const satisfies Record<string, StageSpec>;

export type StageName = keyof typeof STAGE_SPECS;
/** Stage names in DAG order, as they appear in cache keys, progress, search attributes and pipeline files. */
export const STAGES = Object.keys(STAGE_SPECS) as StageName[];

// ---- the DAG of one audit ----

/** What a node's parameters may depend on besides the pipeline. */
export interface NodeFacts {
  /** Class names of the training set (known once `ingest` has run). */
  classes: readonly string[];
  /** The class of a per-class node's instance. */
  classIndex: number;
  /** Seconds per stage id computed so far (cache hits count 0). */
  timings: Readonly<Record<string, number>>;
  /** Warnings of the stages completed so far, as `<stage id>: <warning>`. */
  warnings: readonly string[];
  /** Stage ids completed so far from the cache. */
  cached: readonly string[];
  /** Artifact key per stage id completed so far. */
  artifacts: Readonly<Record<string, string>>;
  /** The Temporal run executing the DAG (from the executor); absent in process. */
  run?: AuditRunInfo;
}

export interface DagNode<S extends StageName = StageName> {
  /** Progress row and timing name (`flow` instances are `flow[y]`). */
  id: string;
  stage: S;
  /** The node runs only when this holds (default: always). */
  when?: (p: Pipeline) => boolean;
  /**
   * Input role -> the node that produces it. A list names alternatives: the first that runs.
   * The roles must be the stage's declared inputs; an optional role whose producer does not run
   * is left out; a per-class role (`flow*`) takes every instance of a per-class node.
   */
  inputs: Record<string, string | readonly string[]>;
  params: (p: Pipeline, facts: NodeFacts) => StageParams[S];
}

/** Images per forward pass when extracting features (not part of the method's config). */
const FEATURE_BATCH = 128;
/** The training set: the attacked copy when the pipeline attacks, else the ingested one. */
const TRAIN = ['attack', 'ingest'] as const;

const node = <S extends StageName>(n: DagNode<S>): DagNode => n as unknown as DagNode;

function ingestParams(
  d: { source: DatasetSource; limitPerClass?: number; name?: string; fingerprint?: string },
  imageSize: number,
): IngestParams {
  return {
    source: d.source,
    imageSize,
    ...(d.limitPerClass !== undefined ? { limitPerClass: d.limitPerClass } : {}),
    ...(d.name !== undefined ? { name: d.name } : {}),
    ...(d.fingerprint !== undefined ? { fingerprint: d.fingerprint } : {}),
  };
}

/** The audit, in an order that respects its edges (the walker runs each node as soon as its inputs exist). */
export const AUDIT_DAG: readonly DagNode[] = [
  node({
    id: 'ingest',
    stage: 'ingest',
    inputs: {},
    params: (p) => ingestParams(p.dataset, p.audit.imageSize),
  }),
  node({
    id: 'ingest-test',
    stage: 'ingest',
    when: (p) => p.testSet !== undefined,
    inputs: {},
    params: (p) => ingestParams(p.testSet as NonNullable<Pipeline['testSet']>, p.audit.imageSize),
  }),
  node({
    id: 'attack',
    stage: 'attack',
    when: (p) => p.attack !== undefined,
    inputs: { dataset: 'ingest' },
    params: (p) => ({ attack: p.attack as AttackConfig }),
  }),
  node({
    id: 'lineage',
    stage: 'lineage',
    // Only for a warm start or a reuse: other audits' command sequences (and recorded histories)
    // are unchanged, so this new node needs no patch.
    when: ({ audit: { encoder: e } }) => e.kind === 'reuse' || (e.kind === 'simclr' && e.warmStart === 'previous'),
    inputs: {},
    params: ({ audit, output }) =>
      audit.encoder.kind === 'simclr'
        ? {
            output,
            mode: 'warm-start',
            from: 'previous',
            architecture: { width: audit.encoder.width, stem: audit.encoder.stem, projectionDim: audit.encoder.projectionDim },
            imageSize: audit.imageSize,
          }
        : { output, mode: 'reuse', from: audit.encoder.kind === 'reuse' ? audit.encoder.from : 'previous', imageSize: audit.imageSize },
  }),
  node({
    id: 'encoder',
    stage: 'encoder',
    inputs: { dataset: TRAIN, parent: 'lineage' },
    params: ({ audit }) =>
      audit.encoder.kind === 'simclr'
        ? { kind: 'simclr', config: audit.encoder, seed: audit.seed, backend: audit.backend }
        : audit.encoder.kind === 'reuse'
          ? { kind: 'reuse', from: audit.encoder.from }
          : audit.encoder.kind === 'onnx'
            ? { kind: 'onnx', config: audit.encoder }
            : { kind: 'pretrained', path: audit.encoder.path, imageSize: audit.imageSize },
  }),
  node({
    id: 'features',
    stage: 'features',
    inputs: { encoder: 'encoder', dataset: TRAIN, lineage: 'lineage' },
    params: ({ audit }) => {
      // Absent from the pipelines of audits started before the setting existed (replay): the backbone.
      const { stages, flipAverage } = (audit as Partial<AuditConfig>).features ?? {};
      return {
        backend: audit.backend,
        batchSize: FEATURE_BATCH,
        // Only when set, so that the paper's features keep the key (and cached artifacts) they had.
        ...(stages && !isBackboneOnly(stages) ? { stages } : {}),
        ...(flipAverage ? { flipAverage } : {}),
      };
    },
  }),
  node({
    id: 'flow',
    stage: 'flow',
    inputs: { features: 'features', dataset: TRAIN },
    params: ({ audit }, f) => ({ classIndex: f.classIndex, config: audit.flow, seed: audit.seed + f.classIndex, backend: audit.backend }),
  }),
  node({
    id: 'density',
    stage: 'density',
    inputs: { features: 'features', flow: 'flow' },
    params: ({ audit }, f) => ({ classes: f.classes.length, backend: audit.backend }),
  }),
  node({
    id: 'detect',
    stage: 'detect',
    inputs: { density: 'density', dataset: TRAIN },
    params: ({ audit }) => ({ config: audit.detection }),
  }),
  node({
    id: 'classifier-features',
    stage: 'classifierFeatures',
    // Only for a baseline that asks for them: other audits' command sequences are unchanged.
    when: (p) => defenseFeatures(p.audit) === 'classifier',
    inputs: { dataset: TRAIN },
    params: ({ audit }) => ({
      config: audit.retrain as RetrainConfig, // parsePipeline requires retrain settings for these features
      seed: audit.seed,
      stem: classifierStem(audit),
      imageSize: audit.imageSize,
      backend: audit.backend,
      batchSize: FEATURE_BATCH,
    }),
  }),
  node({
    id: 'relabel',
    stage: 'relabel',
    // The defense's features: the poisoned-data classifier's when it asks for them, else the encoder's.
    inputs: { density: 'density', detect: 'detect', dataset: TRAIN, features: ['classifier-features', 'features'] },
    // Each defense reads its own section (`audit.relabel` for the paper's), named by the plain
    // DEFENSE_SECTION table: this module stays free of the registry's code (the workflow bundle
    // includes it).
    params: ({ audit }) => {
      const section = DEFENSE_SECTION[audit.defense];
      return { defense: audit.defense, config: section === null ? null : audit[section] };
    },
  }),
  node({
    id: 'retrain',
    stage: 'retrain',
    when: (p) => p.audit.retrain !== undefined,
    inputs: { dataset: TRAIN, relabel: 'relabel' },
    params: ({ audit }) => ({
      config: audit.retrain as RetrainConfig,
      seed: audit.seed,
      stem: classifierStem(audit),
      imageSize: audit.imageSize,
      backend: audit.backend,
    }),
  }),
  node({
    id: 'evaluate',
    stage: 'evaluate',
    // Ground truth (an attack) or a retrained model with a test set: something to measure.
    when: (p) => p.attack !== undefined || (p.audit.retrain !== undefined && p.testSet !== undefined),
    inputs: { relabel: 'relabel', dataset: TRAIN, attack: 'attack', model: 'retrain', test: 'ingest-test' },
    params: ({ audit, attack }) => ({ seed: audit.seed, backend: audit.backend, ...(attack ? { attack } : {}) }),
  }),
  node({
    id: 'report',
    stage: 'report',
    inputs: {
      dataset: TRAIN,
      detect: 'detect',
      relabel: 'relabel',
      features: 'features',
      density: 'density',
      encoder: 'encoder',
      evaluate: 'evaluate',
      attack: 'attack',
    },
    params: (p, f) => ({
      output: p.output,
      config: p.audit,
      timings: { ...f.timings },
      warnings: [...f.warnings],
      cachedStages: [...f.cached],
      artifacts: { ...f.artifacts },
      ...(f.run ? { run: { ...f.run } } : {}),
    }),
  }),
];
