// Plain data shared by the workflows, the activities and the client: the pipeline as the
// workflow receives it, stage requests and outcomes, and the progress the `progress` query
// returns. Types only (and constants), so the deterministic workflow bundle can import it.
import type { ArtifactRef } from '../data/artifacts.js';
import type { DatasetSource } from '../data/sources.js';
import type { AttackConfig } from '../attacks/types.js';
import type { AuditConfig } from '../ml/config.js';
import type { AuditReport, EncoderLineage, Evaluation } from '../ml/audit-report.js';
import type { QueueKind, StageName } from './graph.js';

export type { ArtifactRef, DatasetSource };

export interface DatasetInput {
  source: DatasetSource;
  limitPerClass?: number;
  name?: string;
  /**
   * The source's fingerprint (data/fingerprint.ts) when the starter already computed it (the
   * CLI does, for the workflow id): the ingest's cache key uses it instead of computing it again.
   * Schedules leave it out, so every scheduled run sees tonight's files.
   */
  fingerprint?: string;
}

export { STAGES, type QueueKind, type StageName } from './graph.js';

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
  /**
   * Classes per group of a grouped per-class stage (`flow`): one activity trains the group's
   * flows together. Absent: workflows/dag.ts `flowGroupSize` decides (1: one per class).
   */
  flowGroupSize?: number;
  /** Base address of the Temporal web UI, set by the client that starts the audit (links in report.html). */
  uiUrl?: string;
}

/** A validated pipeline with defaults applied and every path absolute: the workflow's input. */
export interface Pipeline {
  name: string;
  description?: string;
  /** Absolute path of the pipeline file it came from. */
  file: string;
  /** The training set. Its image size is `audit.imageSize` (the file's `dataset.imageSize`): one source for ingest, encoder and classifier. */
  dataset: DatasetInput;
  testSet?: { source: DatasetSource; limitPerClass?: number; name?: string; fingerprint?: string };
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
  /** The cache key the probe computed, so the activity does not fingerprint external inputs again. */
  key?: string;
}

/**
 * The instances of a per-class stage for a group of classes, computed together in one activity
 * (a stage with `computeGroup`: the flows of the group trained as one batched model). Each
 * member keeps its own request, cache key and artifact.
 */
export interface StageGroupRequest {
  stage: StageName;
  /** Display id of the group: `flow[0-4]` (progress, logs, epoch updates). */
  label: string;
  members: StageRequest[];
  /** The workflow that asked, for progress signals. */
  reportTo?: string;
  options?: StageRequest['options'];
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
  /** Computing stages: what the tensors ran on, in words (backend/backend.ts currentDevice). */
  device?: string;
  metrics?: Record<string, number>;
  /** Report stage only: the verdict in brief and the files written to the output folder. */
  summary?: AuditSummary;
  outputs?: string[];
  /** Problems that do not stop the stage but weaken its result (a class too small for its flow), for logs and the report. */
  warnings?: string[];
  /** Encoder stage: its parent and cumulative epochs (warm start, reuse). */
  lineage?: EncoderLineage;
  /** Encoder stage, reuse: the encoder artifact whose weights this one copies (the first of a chain of copies). */
  origin?: string;
  /** Features stage, reuse: rows computed by the encoder and rows taken from the previous features. */
  featureReuse?: NonNullable<EncoderLineage['features']>;
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

/** Input of the child workflow that runs one class's instance of a per-class stage. */
export interface ClassStageInput {
  request: StageRequest<unknown>;
  className: string;
  temporal: PipelineTemporalOptions;
  datasetName: string;
}

/** Input of the child workflow that runs a group of classes' instances of a grouped per-class stage. */
export interface ClassGroupInput {
  /** `flow[0-4]`. */
  label: string;
  stage: StageName;
  /** One request per class (label `flow[y]`), all with the same inputs. */
  members: StageRequest<unknown>[];
  classNames: string[];
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

/**
 * The verdict in brief: a fixed handful of numbers whatever the number of classes (the full
 * report stays in the artifact store, reachable through `reportRef`).
 */
export interface AuditSummary {
  datasetName: string;
  samples: number;
  /** Names of the flagged classes (one per class found poisoned; empty when clean). */
  targetClasses: string[];
  counts: AuditReport['counts'];
  evaluation?: Evaluation;
  /** How many warnings report.json lists (the warnings themselves grow with the classes). */
  warnings: number;
  /** Tests that came close without firing, as "<class> (<test> <statistic> vs <threshold>)"; at most 5 (report.json lists all). */
  nearMisses?: string[];
}

/** What an audit workflow returns: references, not the report (it grows with the classes). */
export interface AuditResult {
  workflowId: string;
  summary: AuditSummary;
  /** Artifact holding report.json and cleansed.jsonl. */
  reportRef: ArtifactRef;
  /** Files written into the pipeline's output folder. */
  outputs: string[];
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
