// Plain data shared by the workflows, the activities and the client: the pipeline as the
// workflow receives it, stage requests and outcomes, and the progress the `progress` query
// returns. Types only (and constants), so the deterministic workflow bundle can import it.
import type { ArtifactRef } from '../data/artifacts.js';
import type { DatasetSpec } from '../data/formats.js';
import type { AttackConfig } from '../attacks/types.js';
import type {
  AuditConfig,
  AuditReport,
  DetectionConfig,
  FlowConfig,
  RelabelConfig,
  RetrainConfig,
  SimclrEncoderConfig,
} from '../ml/config.js';

export type { ArtifactRef };

/** A dataset on disk: one of the ingest formats, or the shared CIFAR-10 copy (extracted on demand). */
export type DatasetSource = DatasetSpec | { format: 'cifar10'; split: 'train' | 'test' };

export interface DatasetInput {
  source: DatasetSource;
  imageSize: number;
  limitPerClass?: number;
  name?: string;
}

/** Stage names as they appear in cache keys, progress, search attributes and pipeline files. */
export const STAGES = [
  'ingest',
  'attack',
  'encoder',
  'features',
  'flow',
  'density',
  'detect',
  'relabel',
  'retrain',
  'evaluate',
  'report',
] as const;
export type StageName = (typeof STAGES)[number];

export type QueueKind = 'cpu' | 'gpu';

export interface PipelineTemporalOptions {
  workflowId?: string;
  taskQueues: { cpu: string; gpu: string };
  /** Which queue runs each stage. */
  stageQueues: Record<StageName, QueueKind>;
  /** Milliseconds. */
  heartbeatTimeouts: Record<StageName, number>;
  /** Milliseconds. */
  startToCloseTimeouts: Record<StageName, number>;
  maximumAttempts: number;
  checkpointEvery: number;
}

/** A validated pipeline with defaults applied and every path absolute: the workflow's input. */
export interface Pipeline {
  name: string;
  description?: string;
  /** Absolute path of the pipeline file it came from. */
  file: string;
  dataset: DatasetInput;
  testSet?: { source: DatasetSource; limitPerClass?: number; name?: string };
  attack?: AttackConfig;
  audit: AuditConfig;
  /** Absolute folder for report.json and cleansed.jsonl. */
  output: string;
  temporal: PipelineTemporalOptions;
}

/** What every stage activity receives: its parameters and the artifacts it reads, by role. */
export interface StageRequest<P = unknown> {
  stage: StageName;
  /** Display id: `flow[3]`, `ingest-test` ... (progress rows, logs). */
  label: string;
  params: P;
  inputs: Record<string, ArtifactRef>;
  /** The workflow that asked, for progress signals (set by the workflow). */
  reportTo?: string;
  /** How to run, not what to compute: never part of the cache key. */
  options?: { checkpointEvery?: number };
}

/** Small facts about an artifact that the workflow needs to make decisions or show progress. */
export interface StageInfo {
  /** One line for progress and summaries ("600 images, 10 classes", "loss 3.21"). */
  figure: string;
  classes?: string[];
  samples?: number;
  datasetName?: string;
  datasetHash?: string;
  targetClasses?: number[];
  counts?: AuditReport['counts'];
  backend?: string;
  metrics?: Record<string, number>;
  /** Report stage only: the report and the files written to the output folder. */
  report?: AuditReport;
  outputs?: string[];
}

export interface StageOutcome {
  ref: ArtifactRef;
  info: StageInfo;
  cached: boolean;
  /** Wall time of the computation (0 for a cache hit). */
  seconds: number;
  resumedFromEpoch?: number;
  attempt?: number;
}

export interface ProbeResult {
  key: string;
  hit?: StageOutcome;
}

// ---- parameters of each stage (what enters its cache key) ----
// Inputs that live outside the store (dataset files, a pretrained model folder) enter the key
// through a fingerprint the activity computes, not through these parameters.
export interface IngestParams {
  source: DatasetSource;
  imageSize: number;
  limitPerClass?: number;
  name?: string;
}
export interface AttackParams {
  attack: AttackConfig;
}
export type EncoderParams =
  | { kind: 'simclr'; config: SimclrEncoderConfig; seed: number; backend: AuditConfig['backend'] }
  | { kind: 'pretrained'; path: string; imageSize: number };
export interface FeaturesParams {
  backend: AuditConfig['backend'];
  batchSize: number;
}
export interface FlowParams {
  classIndex: number;
  config: FlowConfig;
  seed: number;
  backend: AuditConfig['backend'];
}
export interface DensityParams {
  classes: number;
}
export interface DetectParams {
  config: DetectionConfig;
}
export interface RelabelParams {
  config: RelabelConfig;
}
export interface RetrainParams {
  config: RetrainConfig;
  seed: number;
  stem: 'cifar' | 'imagenet';
  imageSize: number;
  backend: AuditConfig['backend'];
}
export interface EvaluateParams {
  attack?: AttackConfig;
  seed: number;
  backend: AuditConfig['backend'];
}
export interface ReportParams {
  output: string;
  config: AuditConfig;
  timings: Record<string, number>;
}

/** Per-class flow child workflow input. */
export interface ClassFlowInput {
  request: StageRequest<FlowParams>;
  className: string;
  temporal: PipelineTemporalOptions;
  datasetName: string;
}

// ---- progress ----
export type StageState = 'pending' | 'running' | 'cached' | 'done' | 'failed' | 'skipped';

export interface StageProgress {
  /** `ingest`, `flow[3]`, `ingest-test` ... */
  id: string;
  stage: StageName;
  state: StageState;
  queue?: string;
  key?: string;
  epoch?: number;
  epochs?: number;
  loss?: number;
  /** Seconds the stage took (computation), or has been running so far at the last update. */
  seconds?: number;
  figure?: string;
  resumedFromEpoch?: number;
  attempt?: number;
  error?: string;
}

export type Verdict = 'running' | 'clean' | 'poisoned' | 'failed';

export interface AuditProgress {
  workflowId: string;
  pipeline: string;
  dataset: string;
  currentStage: string;
  verdict: Verdict;
  targetClasses: string[];
  stages: StageProgress[];
  done: boolean;
}

/** What an activity sends its workflow after each epoch (signal `stageEpoch`). */
export interface EpochUpdate {
  id: string;
  epoch: number;
  epochs: number;
  loss?: number;
  resumedFromEpoch?: number;
  attempt?: number;
}

export interface AuditResult {
  report: AuditReport;
  /** Artifact holding report.json and cleansed.jsonl. */
  reportRef: ArtifactRef;
  /** Files written into the pipeline's output folder. */
  outputs: string[];
  progress: AuditProgress;
}

export const SEARCH_ATTRIBUTE_NAMES = {
  dataset: 'BackdoorDataset',
  stage: 'BackdoorStage',
  targetClasses: 'BackdoorTargetClasses',
  verdict: 'BackdoorVerdict',
} as const;

/** Failure type an activity raises when an input artifact no longer matches its hashes (details[0] = key). */
export const CORRUPT_ARTIFACT = 'CorruptArtifact';
/** Error types that no retry can fix. */
export const NON_RETRYABLE = ['DatasetError', 'PipelineInputError', CORRUPT_ARTIFACT, 'AbortError'];

export const TASK_QUEUES = { cpu: 'audit-cpu', gpu: 'audit-gpu' } as const;
