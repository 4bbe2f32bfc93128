// The whole method in-process: the paper's steps 2-10 on a dataset already ingested.
// The Temporal pipeline runs the same stage functions as activities; this is the reference
// it must agree with, and the library entry point for users without Temporal.
import type { LayersModel } from '@tensorflow/tfjs-layers';
import type { ImageSource, PoisonTruth } from '../data/types.js';
import { selectBackend } from '../backend/backend.js';
import { classifierStem, type AuditConfig, type AuditReport, type CleansedEntry, type Evaluation, type FlowConfig } from './config.js';
import { detectTargets, type ClassDetection } from './detect.js';
import { densityMatrix } from './density.js';
import { loadPretrainedEncoder } from './encoder.js';
import { accuracy, attackSuccessRate, cleansingMetrics } from './evaluate.js';
import { extractFeatures } from './features.js';
import { trainClassFlow, type ClassFlow } from './flow.js';
import { buildReport, trainingLabels } from './cleansed.js';
import { selectRows, type Matrix } from './matrix.js';
import { splitAndRelabel } from './relabel.js';
import { poisonScores } from './score.js';
import { trainSimclr } from './simclr.js';
import { predict, trainClassifier } from './train.js';

export interface AuditDataset {
  name: string;
  /** Content hash of the training set (from ingest). */
  hash: string;
  train: ImageSource;
  /** Clean test set, for ACC. */
  test?: ImageSource;
  /** Triggered non-target test images labelled with the target, for ASR. */
  triggeredTest?: ImageSource;
  /** Ground truth of a dataset poisoned by `attacks/`. */
  truth?: PoisonTruth;
}

export interface AuditOptions {
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Called when a stage starts and when it ends (with its duration in seconds). */
  onStage?: (stage: string, event: 'start' | 'end', seconds?: number) => void;
}

export interface AuditResult {
  report: AuditReport;
  cleansed: CleansedEntry[];
  /** N x C log-densities (step 5), for analyses beyond the report. */
  density: Matrix;
  detections: ClassDetection[];
}

/** Runs every stage of the method on `dataset` and returns the report and the cleansed manifest. */
export async function auditDataset(dataset: AuditDataset, config: AuditConfig, options: AuditOptions = {}): Promise<AuditResult> {
  const { signal } = options;
  const log = options.log ?? (() => undefined);
  const timings: Record<string, number> = {};
  async function stage<T>(name: string, run: () => Promise<T>): Promise<T> {
    options.onStage?.(name, 'start');
    const t0 = performance.now();
    const out = await run();
    timings[name] = (performance.now() - t0) / 1000;
    options.onStage?.(name, 'end', timings[name]);
    log(`${name}: ${timings[name].toFixed(1)} s`);
    return out;
  }
  const { train } = dataset;
  const backend = await selectBackend(config.backend, 'training', log);

  const encoder: LayersModel = await stage('encoder', async () => {
    if (config.encoder.kind === 'pretrained') return loadPretrainedEncoder(config.encoder.path, config.imageSize);
    return (await trainSimclr(train, config.encoder, config.seed, { signal, log })).encoder;
  });
  const features = await stage('features', () => extractFeatures(encoder, train, { signal }));
  encoder.dispose();

  const flows = await stage('flows', () =>
    perClassFlows(features, train.labels, train.classes.length, config.flow, config.seed, { signal }),
  );
  const density = await stage('density', async () => densityMatrix(flows, features));
  flows.forEach((f) => f.dispose());

  const detections = await stage('detection', async () => detectTargets(density, train.labels, config.detection));
  const cleansed = await stage('relabel', async () =>
    splitAndRelabel(train.ids, train.labels, density, poisonScores(density, train.labels), detections, config.relabel, train.classes),
  );

  const targetClasses = detections.filter((d) => d.kind !== 'clean').map((d) => d.index);

  let evaluation: Evaluation | undefined;
  if (dataset.truth) evaluation = { ...cleansingMetrics(cleansed, dataset.truth, targetClasses) };
  if (config.retrain && dataset.test) {
    const retrain = config.retrain;
    const stem = classifierStem(config);
    const model = await stage(
      'retrain',
      async () =>
        (
          await trainClassifier(train, trainingLabels(cleansed), retrain, {
            seed: config.seed,
            stem,
            inputSize: config.imageSize,
            hooks: { signal, log },
          })
        ).model,
    );
    await stage('evaluate', async () => {
      const test = dataset.test as ImageSource;
      evaluation = { ...evaluation, acc: accuracy(await predict(model, test, { signal }), test.labels) };
      if (dataset.triggeredTest && dataset.truth) {
        const pred = await predict(model, dataset.triggeredTest, { signal });
        evaluation.asr = attackSuccessRate(pred, dataset.truth.targetClass);
      }
    });
    model.dispose();
  }

  const report = buildReport({
    dataset: { name: dataset.name, hash: dataset.hash, samples: train.size, classes: train.classes },
    backend: backend.name,
    config,
    detections,
    cleansed,
    timings,
    ...(evaluation ? { evaluation } : {}),
  });
  return { report, cleansed, density, detections };
}

/** Indices of the samples labelled `y`. */
export function classMembers(labels: Int32Array, y: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < labels.length; i++) if (labels[i] === y) out.push(i);
  return out;
}

/** One flow per class, each trained on that class's features only (step 4). */
export async function perClassFlows(
  features: Matrix,
  labels: Int32Array,
  numClasses: number,
  cfg: FlowConfig,
  seed: number,
  hooks: { signal?: AbortSignal } = {},
): Promise<ClassFlow[]> {
  const flows: ClassFlow[] = [];
  for (let y = 0; y < numClasses; y++) {
    const rows = classMembers(labels, y);
    if (rows.length === 0) throw new Error(`class ${y} has no samples: a flow cannot be fitted`);
    flows.push((await trainClassFlow(selectRows(features, rows), cfg, seed + y, hooks)).flow);
  }
  return flows;
}
