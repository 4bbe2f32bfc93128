// The audit's output contract: the shapes of report.json and cleansed.jsonl. Other tools read
// these names, so they change only with the report's version; the configuration they record is
// ml/config.ts.
import type { BackendName } from '../backend/backend.js';
import type { AuditConfig } from './config.js';
import type { ClassSplit, ClassTests, NearMiss } from './verdict.js';

export type ClassKind = 'clean' | 'non-disruptive' | 'disruptive';

export interface ClassReport {
  index: number;
  name: string;
  count: number;
  /** Mean NLL of this class's flow over samples of the other classes. */
  sND: number;
  /**
   * Mean rank of this class's flow among the flows foreign to each sample of another class (0:
   * it explains them best, 1: worst); 'rank-z' normalises this instead of sND. Absent in
   * reports written before it existed.
   */
  foreignRank?: number;
  /** sND (or foreignRank) on the cross-class scale chosen by `detection.ndNormalization`. */
  sNDNormalized: number;
  /** Fraction of the class below the valley of its foreign-density histogram. */
  sD: number;
  flagged: boolean;
  kind: ClassKind;
  /** Each test against its threshold: statistic, margin, fired, near miss (ml/verdict.ts). */
  tests: ClassTests;
  /** What the split did to the class's samples, and with ground truth what it cost. */
  split: ClassSplit;
}

export interface Evaluation {
  /** Clean test accuracy of the retrained classifier. */
  acc?: number;
  /** Attack success rate of the retrained classifier on triggered non-target test images. */
  asr?: number;
  /** Fraction of truly poisoned samples sent to D^_P (or removed, for disruptive targets). */
  tpr?: number;
  /** Fraction of clean samples of flagged classes sent there. */
  fpr?: number;
  /** Among relabelled poisoned samples, fraction whose new label is the pre-poison label. */
  relabelAccuracy?: number;
  /** Whether the flagged classes are exactly the attack's target. */
  targetDetected?: boolean;
}

export interface AuditReport {
  dataset: { name: string; hash: string; samples: number; classes: string[] };
  backend: BackendName;
  config: AuditConfig;
  classes: ClassReport[];
  targetClasses: number[];
  counts: { kept: number; relabelled: number; dropped: number };
  timings: Record<string, number>;
  evaluation?: Evaluation;
  /** What the stages warned about (a class too small for its flow, ...); absent when nothing. */
  warnings?: string[];
  /** Tests that came close to their threshold without firing (ml/verdict.ts); empty when none. */
  nearMisses: (NearMiss & { name: string })[];
  /** Stage ids served from the cache in this run (their timings are 0). */
  cachedStages?: string[];
  /** Artifact key of every stage of this run, by stage id: the lineage of the result. */
  artifacts?: Record<string, string>;
  /** The Temporal run that produced the report; absent for an in-process audit. */
  run?: AuditRunInfo;
  /** What changed since the audit whose outputs were in the output folder before (report/diff.ts). */
  sinceLastAudit?: SinceLastAudit;
  /** Where the encoder came from (warm start or reuse), and how many features were recomputed. */
  lineage?: EncoderLineage;
  /**
   * What each computing stage the report reads ran on, by stage id ("CPU: libtensorflow 2.15.1
   * (tfjs-node)", "GPU: NVIDIA H200 ..."); a stage served from an artifact made before devices were
   * recorded is absent.
   */
  devices?: Record<string, string>;
}

/** The encoder's ancestry and the features' reuse, as recorded in report.json. */
export interface EncoderLineage {
  /** Encoder artifact this one continued (warm start) or copied (reuse); null: trained from scratch. */
  parentEncoder: string | null;
  /** SimCLR epochs behind this encoder over the whole lineage (the parent's plus this audit's). */
  cumulativeEpochs: number;
  /** Why there is no parent (no previous audit, missing or corrupted artifact, another architecture). */
  reason?: string;
  /** Reuse: samples that went through the encoder (new or changed content) and rows taken from `from`. */
  features?: { recomputed: number; reused: number; from: string | null };
}

/** The previous audit of the same output folder against this one, in counts (the sample lists grow with the data). */
export interface SinceLastAudit {
  before: { datasetHash: string; samples: number; targetClasses: string[] };
  /** Matched by sample id. */
  samples: { added: number; removed: number; labelChanged: number; common: number };
  /** Classes flagged, unflagged or flagged by the other test since. */
  verdictChanges: { name: string; verdict: string; kindBefore?: ClassKind; kindAfter?: ClassKind }[];
  newlyRelabelled: number;
  newlyDropped: number;
  restored: number;
  configChanged: string[];
  /** The diff as text (`backdoor-audit diff`), capped. */
  text: string[];
}

export interface AuditRunInfo {
  workflowId: string;
  namespace: string;
  /** Base address of the Temporal web UI, when the client knew it. */
  uiUrl?: string;
}

export type SampleAction = 'keep' | 'relabel' | 'drop';

/**
 * Which side of the defense's split a sample fell on; evaluation (TPR / FPR of D^_P) reads
 * this, never the reason text, so that every defense is scored the same way.
 * - 'poisoned': the part the defense treats as poisoned (D^_P), whatever it then does with it:
 *   relabelled or dropped.
 * - 'clean': kept with its own label as clean.
 * - 'uncertain': dropped because the defense cannot decide (neither side).
 * Allowed with each action (checked by ml/cleansed.ts `checkCleansed`): keep -> 'clean';
 * relabel -> 'poisoned'; drop -> 'poisoned' or 'uncertain'.
 * For 'flow-relabel' (the paper's method, ml/relabel.ts): every sample of an unflagged class is
 * 'clean'; in a flagged class the alpha fraction at the poisoned end is 'poisoned' (relabelled
 * if the class is non-disruptive, dropped if disruptive), the alpha fraction at the other end is
 * 'clean' (kept), and the 1 - 2 * alpha middle is 'uncertain' (dropped).
 */
export type SampleSide = 'poisoned' | 'clean' | 'uncertain';

/** One line of cleansed.jsonl. */
export interface CleansedEntry {
  id: string;
  label: number;
  action: SampleAction;
  side: SampleSide;
  newLabel?: number;
  score?: number;
  reason: string;
}
