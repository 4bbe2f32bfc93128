// The audit's configuration as plain data. Every default is the paper's number (see
// ../shared/docs/method.md, restated in README.md) unless its comment says otherwise.
import type { BackendChoice } from '../backend/backend.js';
import type { DefenseName } from './defenses/index.js';

export type Stem = 'cifar' | 'imagenet';

export interface SimclrEncoderConfig {
  kind: 'simclr';
  /** ResNet-18 base width (64 in the paper; smaller for CPU runs). */
  width: number;
  stem: Stem;
  epochs: number;
  batchSize: number;
  /** Adam learning rate (paper: 3e-4, betas 0.9 / 0.99). */
  lr: number;
  /** NT-Xent temperature (0.5, the common CIFAR value). */
  temperature: number;
  /** Output size of the projection head. */
  projectionDim: number;
  /**
   * 'previous': start from the encoder of the last audit whose report.json is in the pipeline's
   * output folder (its weights, and its optimizer and data-order state when it kept them) and
   * train `epochs` more; from scratch when there is none (the lineage stage says why).
   */
  warmStart?: 'previous';
}

export interface PretrainedEncoderConfig {
  kind: 'pretrained';
  /** Folder holding a tfjs LayersModel (model.json + weights) mapping images to features. */
  path: string;
}

/**
 * A frozen encoder exported from PyTorch to ONNX (torch.onnx.export), run with ONNX Runtime
 * (ml/onnx-encoder.ts). Images get torchvision's preprocessing: resize, pixel / 255, Normalize.
 */
export interface OnnxEncoderConfig {
  kind: 'onnx';
  /** The .onnx file; its sha256 is part of the encoder's cache key. */
  path: string;
  /** Side in pixels the model takes; images are resized to it (bilinear, align_corners=False). */
  inputSize: number;
  /** Per-channel R, G, B mean on the [0, 1] scale (ImageNet: 0.485, 0.456, 0.406). */
  mean: [number, number, number];
  /** Per-channel R, G, B std on the [0, 1] scale (ImageNet: 0.229, 0.224, 0.225). */
  std: [number, number, number];
  /** The model output taken as features, flattened to [N, D]. Absent: its first output. */
  output?: string;
  /** Input layout: 'nchw' (PyTorch's export) or 'nhwc'. */
  layout: 'nchw' | 'nhwc';
  /** 'cuda': ONNX Runtime's CUDA execution provider where it loads (else CPU, with a warning). */
  provider: 'cpu' | 'cuda';
}

/**
 * A frozen encoder of an earlier audit, no training: only the samples whose content changed
 * since the previous audit go through it (the others keep their feature rows).
 */
export interface ReuseEncoderConfig {
  kind: 'reuse';
  /** 'previous' (the encoder of the audit whose report.json is in the output folder) or an encoder artifact key. */
  from: string;
}

export type EncoderConfig = SimclrEncoderConfig | PretrainedEncoderConfig | OnnxEncoderConfig | ReuseEncoderConfig;

/** A stage of the ResNet encoder, by number (stage s ends in block `s<s>b2`, ml/resnet.ts). */
export type ResNetStage = 1 | 2 | 3 | 4;

export interface FeaturesConfig {
  /**
   * The stages whose global average pools, concatenated in stage order, are the features (ml/resnet.ts
   * pooledStages). [4] is the backbone output, the paper's features. Decision: [2, 3, 4] by
   * default for the encoders this project builds. SimCLR's last stage learns to ignore what its
   * augmentations change (crops, colour), and a trigger is made of exactly such textures and
   * colours; stage 2 keeps them. Measured on the 300-per-class matrix (bench feature-layers,
   * docs/results.md "Pooled encoder stages"). A pretrained or ONNX encoder's features are its output ([4]).
   */
  stages: ResNetStage[];
  /**
   * Each sample's features are the mean of the encoder's outputs on the image and on its
   * horizontal mirror (any encoder: the mirror is made from the pixels). SimCLR is trained to map
   * both to one point, so the mean keeps what they share and averages out what it did not learn
   * to ignore. Costs a second inference pass, a small part of an audit next to SimCLR training.
   * Decision: off by default. On the 300-per-class matrix it relabelled 1.4 points better but left
   * the ASR after retraining higher on 7 of 8 sets (docs/results.md "The mirror averaged into the features").
   */
  flipAverage: boolean;
}

/** Whether the encoder is a ResNet of ours whose stages can be pooled: not a pretrained or ONNX model (a reuse is known only when it runs). */
export function poolsStages(encoder: EncoderConfig): boolean {
  return encoder.kind !== 'pretrained' && encoder.kind !== 'onnx';
}

/** Whether `stages` is the backbone output alone, the paper's features (the default of pretrained and ONNX encoders). */
export function isBackboneOnly(stages: readonly ResNetStage[]): boolean {
  return stages.length === 1 && stages[0] === 4;
}

export interface FlowConfig {
  /** Paper: 50 epochs, batch 16, Adam lr 1e-3, betas (0.9, 0.99). */
  epochs: number;
  batchSize: number;
  lr: number;
  /**
   * Hidden width of each coupling's affine-ReLU-affine network (the paper gives none). 64 by
   * default: with 512 the flows of classes of a few hundred samples overfit and every class's
   * foreign NLL explodes, hiding the target (docs/nd-normalization.md, SimCLR section).
   */
  hidden: number;
}

/** How S_ND (mean foreign NLL of a class's flow) is put on a scale shared by all classes. */
export type NdNormalization = 'median-ratio' | 'own-gap' | 'robust-z' | 'rank-z';

export interface DetectionConfig {
  ndNormalization: NdNormalization;
  /** Threshold on the normalised S_ND; a class is non-disruptively flagged below it. */
  betaND: number;
  /** Minimum fraction of a class below the valley of the foreign-density histogram (paper 0.05). */
  betaD: number;
  /** Histogram bins for the disruptive test (paper 30). */
  bins: number;
  /** The valley is searched left of this position on the [0, 1]-scaled axis (paper 0.75). */
  lambda: number;
}

/** What the poison score compares a sample's own density with (ml/score.ts). */
export type ScoreReference = 'max-foreign' | 'median-foreign';

/**
 * Which generative model picks the class a non-disruptive target's poisoned samples are
 * relabelled to: 'flows', the paper's (argmax of the other classes' flows), or
 * 'shared-gaussian', per-class Gaussians on the features with one shared covariance
 * (ml/class-gaussians.ts).
 */
export type RelabelModel = 'flows' | 'shared-gaussian';

/**
 * The model an audit relabelled with: its `relabel.model`, or the flows for an audit recorded
 * (or a report written) before the setting existed, which relabelled with them.
 */
export function relabelModelOf(relabel: Pick<RelabelConfig, 'model'> | undefined): RelabelModel {
  return relabel?.model ?? 'flows';
}

export interface RelabelConfig {
  /** Fraction sent to D^_P and fraction kept as clean inside a flagged class (paper 0.15). */
  alpha: number;
  /** 'max-foreign' is the paper's score; 'median-foreign' (default) the measured improvement. */
  scoreReference: ScoreReference;
  /**
   * The relabelling model (default 'shared-gaussian'). Audits recorded before it existed lack
   * it at run time: they relabelled with the flows and replay so (relabelModelOf).
   */
  model: RelabelModel;
  /**
   * With model 'shared-gaussian': the leading principal components of the images' 16 x 16
   * thumbnails, this many, are appended to the features the Gaussians are fitted on
   * (ml/pixel-components.ts). Pooled features say what is in an image, the thumbnail where.
   * Decision: 64 by default. On the 300-per-class matrix, both seeds, it relabelled every
   * poisoned sample 2.1 points better on average (44.3 -> 46.4%, up on 7 of 8 sets) without
   * touching detection or the split (docs/results.md "Pixels beside the features"). 0: the features
   * alone; absent (audits recorded before the setting existed): the same, and they replay so.
   */
  pixelComponents?: number;
}

// Baseline defenses (ml/defenses/): comparison rows for the paper's method. Each reads its own
// section below; none reads the flow method's detections.

/**
 * The features a feature-space baseline reads: 'encoder', the audit's own (SimCLR, the same the
 * flows see); 'classifier', the penultimate layer of a classifier trained on the dataset as
 * labelled (stage `classifierFeatures`, with the `retrain` settings), the setting of the
 * Spectral Signatures and Activation Clustering papers, where the backdoor is a learned feature.
 */
export type DefenseFeatures = 'encoder' | 'classifier';

export interface SpectralSignaturesConfig {
  /**
   * Fraction of EVERY class removed, highest outlier score first. Tran et al. (2018) remove
   * 1.5 * eps, with eps the assumed upper bound on the poison rate; 0.15 = 1.5 * 0.1.
   */
  removeFraction: number;
  features: DefenseFeatures;
}

export interface ActivationClusteringConfig {
  /**
   * Dimensions each class is reduced to before 2-means. Chen et al. (2018): 10, by ICA; here by
   * PCA, as in ART's implementation of the paper (the clusters are the same up to rotation).
   */
  dims: number;
  /** A class is poisoned when its smaller cluster holds at most this share of it (paper: 0.35)... */
  sizeThreshold: number;
  /** ...and the 2-means split's mean silhouette is at least this (ART's 0.1); -1 turns this test off. */
  silhouetteThreshold: number;
  features: DefenseFeatures;
}

export interface KnnConsistencyConfig {
  /** Neighbours consulted, by cosine similarity of the features, all classes together. */
  k: number;
  /** A sample is inconsistent when MORE than this fraction of its k neighbours carry another label. */
  disagreeFraction: number;
  /**
   * An inconsistent sample is relabelled to its neighbours' most common other label when at
   * least this fraction of the k carry it, otherwise removed (project's choice: 0.7, 7 of 10).
   */
  relabelFraction: number;
}

export interface RetrainConfig {
  width: number;
  epochs: number;
  batchSize: number;
  /** SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr / 10 at each milestone epoch. */
  lr: number;
  momentum: number;
  weightDecay: number;
  milestones: number[];
}

export interface AuditConfig {
  seed: number;
  backend: BackendChoice;
  /** Images are resized to imageSize x imageSize at ingest (32 for CIFAR, 224 for ImageNet). */
  imageSize: number;
  encoder: EncoderConfig;
  features: FeaturesConfig;
  flow: FlowConfig;
  detection: DetectionConfig;
  /**
   * Which registered defense (ml/defenses/) computes the split into cleansed.jsonl. Decision:
   * the default is 'flow-relabel', the paper's method (poison score + split and relabel); the
   * others are baselines to compare it with on the same features and density facts.
   */
  defense: DefenseName;
  /** Config of 'flow-relabel'. */
  relabel: RelabelConfig;
  /** Config of 'spectral-signatures'. */
  spectralSignatures: SpectralSignaturesConfig;
  /** Config of 'activation-clustering'. */
  activationClustering: ActivationClusteringConfig;
  /** Config of 'knn-consistency'. */
  knnConsistency: KnnConsistencyConfig;
  /** Absent: stop after the cleansed manifest. */
  retrain?: RetrainConfig;
}

/**
 * The AuditConfig section each defense reads (its `configOf`). Plain data, so that the workflow
 * graph passes the right section to the relabel stage without loading the defenses' code.
 */
export const DEFENSE_SECTION = {
  'flow-relabel': 'relabel',
  'spectral-signatures': 'spectralSignatures',
  'activation-clustering': 'activationClustering',
  'knn-consistency': 'knnConsistency',
  none: null,
} as const satisfies Record<DefenseName, keyof AuditConfig | null>;

/** The features the audit's defense reads: a baseline's `features` setting, else the encoder's. */
export function defenseFeatures(config: Pick<AuditConfig, 'defense' | 'spectralSignatures' | 'activationClustering'>): DefenseFeatures {
  if (config.defense === 'spectral-signatures') return config.spectralSignatures.features;
  if (config.defense === 'activation-clustering') return config.activationClustering.features;
  return 'encoder';
}

/** ResNet stem for images of this size: the CIFAR 3x3 stem below 64 pixels, the ImageNet one from 64. */
export function stemForImageSize(imageSize: number): Stem {
  return imageSize >= 64 ? 'imagenet' : 'cifar';
}

/** Stem of the retrained classifier: the SimCLR encoder's, or the one the image size calls for. */
export function classifierStem(config: Pick<AuditConfig, 'encoder' | 'imageSize'>): Stem {
  return config.encoder.kind === 'simclr' ? config.encoder.stem : stemForImageSize(config.imageSize);
}

export const defaultSimclrEncoder: SimclrEncoderConfig = {
  kind: 'simclr',
  width: 64,
  stem: 'cifar',
  epochs: 200,
  batchSize: 256,
  lr: 3e-4,
  temperature: 0.5,
  projectionDim: 128,
};

export const defaultAuditConfig: AuditConfig = {
  seed: 0,
  backend: 'auto',
  imageSize: 32,
  encoder: defaultSimclrEncoder,
  features: { stages: [2, 3, 4], flipAverage: false },
  flow: { epochs: 50, batchSize: 16, lr: 1e-3, hidden: 64 },
  detection: { ndNormalization: 'rank-z', betaND: -2.5, betaD: 0.05, bins: 30, lambda: 0.75 },
  defense: 'flow-relabel',
  relabel: { alpha: 0.15, scoreReference: 'median-foreign', model: 'shared-gaussian', pixelComponents: 64 },
  spectralSignatures: { removeFraction: 0.15, features: 'encoder' },
  activationClustering: { dims: 10, sizeThreshold: 0.35, silhouetteThreshold: 0.1, features: 'encoder' },
  knnConsistency: { k: 10, disagreeFraction: 0.5, relabelFraction: 0.7 },
  retrain: {
    width: 64,
    epochs: 200,
    batchSize: 128,
    lr: 0.1,
    momentum: 0.9,
    weightDecay: 5e-4,
    milestones: [100, 150],
  },
};
