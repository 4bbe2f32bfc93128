// The parameters of each stage of the audit DAG (workflows/graph.ts): what enters a stage's cache
// key. Inputs that live outside the store (dataset files, a pretrained model folder) enter the key
// through a fingerprint, not through these parameters.
// Types only: the workflow bundle includes this file.
import type { AttackConfig } from '../attacks/types.js';
import type { DefenseConfig, DefenseName } from '../ml/defenses/index.js';
import type {
  AuditConfig,
  DetectionConfig,
  FlowConfig,
  OnnxEncoderConfig,
  ResNetStage,
  RetrainConfig,
  SimclrEncoderConfig,
} from '../ml/config.js';
import type { AuditRunInfo } from '../ml/audit-report.js';
import type { DatasetSource } from './types.js';

export interface IngestParams {
  source: DatasetSource;
  imageSize: number;
  limitPerClass?: number;
  name?: string;
  /** Precomputed fingerprint of the source (not part of the key's parameters: it is the key's external part). */
  fingerprint?: string;
}
export interface AttackParams {
  attack: AttackConfig;
}
export type EncoderParams =
  | { kind: 'simclr'; config: SimclrEncoderConfig; seed: number; backend: AuditConfig['backend'] }
  | { kind: 'pretrained'; path: string; imageSize: number }
  | { kind: 'onnx'; config: OnnxEncoderConfig }
  | { kind: 'reuse'; from: string };
export interface LineageParams {
  /** The pipeline's output folder: its report.json names the previous audit's artifacts. */
  output: string;
  /** 'warm-start': the parent encoder to continue; 'reuse': the encoder to copy and the features to keep. */
  mode: 'warm-start' | 'reuse';
  /** 'previous', or (reuse) an encoder artifact key. */
  from: string;
  /** Warm start: the parent must have this architecture to be loaded. */
  architecture?: { width: number; stem: SimclrEncoderConfig['stem']; projectionDim: number };
  imageSize: number;
}
export interface FeaturesParams {
  backend: AuditConfig['backend'];
  batchSize: number;
  /** The encoder stages pooled into the features; absent: the backbone output alone ([4]), as before the setting existed. */
  stages?: ResNetStage[];
  /** The mean over each image and its mirror (audit.features.flipAverage); absent: the image alone. */
  flipAverage?: boolean;
}
export interface FlowParams {
  classIndex: number;
  config: FlowConfig;
  seed: number;
  backend: AuditConfig['backend'];
}
export interface DensityParams {
  classes: number;
  /** The flows' backend: a density stage may be the first of its worker process to compute (after a restart). */
  backend: AuditConfig['backend'];
}
export interface DetectParams {
  config: DetectionConfig;
}
/** The poisoned-data classifier: trained like `retrain`, on every sample with its given label. */
export type ClassifierFeaturesParams = RetrainParams & { batchSize: number };
export interface RelabelParams {
  defense: DefenseName;
  /** The defense's own config section (ml/defenses/: `configOf`). */
  config: DefenseConfig;
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
  /** Seconds per computed stage id (`encoder`, `flow[3]`, ...). */
  timings: Record<string, number>;
  /** The warnings of the stages before it, each prefixed with its stage id. */
  warnings: string[];
  /** Stage ids served from the cache in this run. */
  cachedStages: string[];
  /** Artifact key per stage id of this run (the result's lineage). */
  artifacts: Record<string, string>;
  /** The Temporal run, when there is one (workflow id and where its UI is). */
  run?: AuditRunInfo;
}

/** The parameter type of each stage. */
export interface StageParams {
  ingest: IngestParams;
  attack: AttackParams;
  lineage: LineageParams;
  encoder: EncoderParams;
  features: FeaturesParams;
  flow: FlowParams;
  density: DensityParams;
  detect: DetectParams;
  classifierFeatures: ClassifierFeaturesParams;
  relabel: RelabelParams;
  retrain: RetrainParams;
  evaluate: EvaluateParams;
  report: ReportParams;
}
