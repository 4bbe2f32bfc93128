// Temporal activities: thin adapters around ml/ and data/. Each stage computes its cache key
// (stage, STAGE_VERSIONS, canonical parameters, input keys), reuses a verified artifact when
// the store has one, and otherwise computes into store.publish. Training stages checkpoint
// under the store's work area keyed by the cache key, heartbeat their epoch, resume on retry
// and stop at the next batch when cancelled.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { cacheKey, type ArtifactRef, type ArtifactStore } from '../data/artifacts.js';
import { ensureCifar10 } from '../data/cifar10.js';
import { DatasetError, type DatasetSpec } from '../data/formats.js';
import { ingest, openDataset, writeDataset, type DatasetManifest, type ShardedDataset } from '../data/ingest.js';
import type { PoisonTruth } from '../data/types.js';
import { createAttack, poisonDataset, triggeredTestSet } from '../attacks/index.js';
import { classMembers } from '../ml/audit.js';
import { selectBackend, type BackendInfo } from '../backend/backend.js';
import { buildReport, countActions, trainingLabels, writeAuditOutputs } from '../ml/cleansed.js';
import type { AuditReport, CleansedEntry, Evaluation } from '../ml/config.js';
import { densityMatrix } from '../ml/density.js';
import { detectTargets, type ClassDetection } from '../ml/detect.js';
import { loadPretrainedEncoder } from '../ml/encoder.js';
import { accuracy, attackSuccessRate, cleansingMetrics } from '../ml/evaluate.js';
import { extractFeatures } from '../ml/features.js';
import { loadFlow, saveFlow, trainClassFlow, type ClassFlow } from '../ml/flow.js';
import type { TrainHooks, TrainProgress } from '../ml/loop.js';
import { selectRows } from '../ml/matrix.js';
import { loadModel, saveModel } from '../ml/model-io.js';
import { splitAndRelabel } from '../ml/relabel.js';
import { poisonScores } from '../ml/score.js';
import { trainSimclr } from '../ml/simclr.js';
import { predict, trainClassifier } from '../ml/train.js';
import { stageEpochSignal } from '../workflows/definitions.js';
import { datasetFingerprint, folderFingerprint } from './fingerprint.js';
import { loadFlowCheckpoint, readJson, readMatrix, saveFlowCheckpoint, writeJson, writeMatrix } from './io.js';
import { CORRUPT_ARTIFACT } from '../workflows/types.js';
import type {
  AttackParams,
  DatasetSource,
  DensityParams,
  DetectParams,
  EncoderParams,
  EpochUpdate,
  EvaluateParams,
  FeaturesParams,
  FlowParams,
  IngestParams,
  ProbeResult,
  RelabelParams,
  ReportParams,
  RetrainParams,
  StageInfo,
  StageName,
  StageOutcome,
  StageRequest,
} from '../workflows/types.js';

/**
 * Implementation version of each stage. Bump a stage's number when its code changes what it
 * computes: every key of that stage, and so of everything downstream, changes with it.
 */
export const STAGE_VERSIONS: Record<StageName, number> = {
  ingest: 1,
  attack: 1,
  encoder: 1,
  features: 2,
  flow: 1,
  density: 1,
  detect: 1,
  relabel: 1,
  retrain: 1,
  evaluate: 1,
  report: 1,
};

const INFO_FILE = 'info.json';
const DETECTION_NUMBERS = ['sND', 'ownNLL', 'sNDNormalized', 'sD', 'valley'];

export interface ActivityDeps {
  store: ArtifactStore;
  /** Used to send epoch updates to the workflow's `progress` table; without it only heartbeats are sent. */
  client?: Client;
  /** Where activity log lines go (default: the activity logger). */
  log?: (line: string) => void;
}

/** What a training activity heartbeats; read back on retry. */
export interface TrainingHeartbeat {
  epoch: number;
  epochs: number;
  loss?: number;
  checkpoint?: string;
  batch?: number;
  batches?: number;
}

export type AuditActivities = ReturnType<typeof createActivities>;

export function createActivities(deps: ActivityDeps) {
  const { store } = deps;
  const log = (line: string) => (deps.log ? deps.log(line) : Context.current().log.info(line));

  async function keyOf(req: StageRequest<unknown>): Promise<string> {
    const inputs = Object.entries(req.inputs)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([role, ref]) => `${role}:${ref.key}`);
    const external = await externalFingerprint(req);
    return cacheKey(req.stage, STAGE_VERSIONS[req.stage], req.params, external ? [...inputs, `external:${external}`] : inputs);
  }

  async function readInfo(ref: ArtifactRef): Promise<StageInfo> {
    return JSON.parse(await readFile(join(store.dir(ref), INFO_FILE), 'utf8')) as StageInfo;
  }

  /** The folder of an input artifact, after checking it against its hashes. */
  async function input(req: StageRequest<unknown>, role: string): Promise<string> {
    const ref = req.inputs[role];
    if (!ref) throw ApplicationFailure.nonRetryable(`${req.label}: missing input '${role}'`, 'PipelineInputError');
    if (!(await store.verify(ref))) {
      await store.lookup(ref.stage, ref.key); // moves the damaged copy to quarantine
      throw ApplicationFailure.create({
        type: CORRUPT_ARTIFACT,
        message: `${req.label}: input '${role}' (${ref.stage} ${ref.key.slice(0, 12)}) does not match its hashes`,
        details: [ref.key],
        nonRetryable: true,
      });
    }
    return store.dir(ref);
  }

  /** Datasets opened by one stage run, closed when it ends (their shard file handles). */
  class Scope {
    private readonly opened: ShardedDataset[] = [];
    constructor(private readonly req: StageRequest<unknown>) {}
    async dataset(role = 'dataset'): Promise<ShardedDataset> {
      const ds = await openDataset(join(await input(this.req, role), 'dataset'));
      this.opened.push(ds);
      return ds;
    }
    async close(): Promise<void> {
      await Promise.all(this.opened.map((d) => d.close().catch(() => undefined)));
    }
  }

  interface Computed {
    info: StageInfo;
    resumedFromEpoch?: number;
  }

  /** Cache check, then compute into a fresh artifact. `work` is a scratch folder kept across retries. */
  async function compute(
    req: StageRequest<unknown>,
    run: (tmp: string, work: string, scope: Scope) => Promise<Computed>,
  ): Promise<StageOutcome> {
    const ctx = Context.current();
    const key = await keyOf(req);
    const existing = await store.lookup(req.stage, key);
    if (existing) return { ref: existing, info: await readInfo(existing), cached: true, seconds: 0 };
    const work = join(store.root, '.work', key);
    await mkdir(work, { recursive: true });
    const t0 = performance.now();
    let computed: Computed | undefined;
    const scope = new Scope(req);
    const ref = await store.publish(req.stage, key, async (tmp) => {
      try {
        computed = await run(tmp, work, scope);
      } finally {
        await scope.close();
      }
      await writeFile(join(tmp, INFO_FILE), JSON.stringify(computed.info) + '\n');
    });
    const seconds = (performance.now() - t0) / 1000;
    await rm(work, { recursive: true, force: true });
    const done = computed ?? { info: await readInfo(ref) }; // another worker published first
    log(`${req.label}: computed in ${seconds.toFixed(1)} s (attempt ${ctx.info.attempt}): ${done.info.figure}`);
    return {
      ref,
      info: done.info,
      cached: false,
      seconds,
      attempt: ctx.info.attempt,
      ...(done.resumedFromEpoch ? { resumedFromEpoch: done.resumedFromEpoch } : {}),
    };
  }

  /** Heartbeats every batch (the SDK throttles them), signals the workflow once per epoch, logs resumption. */
  function trainingHooks(req: StageRequest<unknown>, work: string): TrainHooks {
    const ctx = Context.current();
    const last = ctx.info.heartbeatDetails as TrainingHeartbeat | undefined;
    if (ctx.info.attempt > 1) {
      log(
        `${req.label}: attempt ${ctx.info.attempt}; last heartbeat ${last ? `at epoch ${last.epoch}/${last.epochs}${last.checkpoint ? `, checkpoint ${last.checkpoint}` : ''}` : 'none'}`,
      );
    }
    let state: TrainingHeartbeat = {
      epoch: last?.epoch ?? 0,
      epochs: last?.epochs ?? 0,
      ...(last?.checkpoint ? { checkpoint: last.checkpoint } : {}),
    };
    let lastSignal = 0;
    return {
      signal: ctx.cancellationSignal,
      checkpointDir: join(work, 'checkpoint'),
      checkpointEvery: req.options?.checkpointEvery ?? 1,
      log,
      onBatch: (batch, batches) => ctx.heartbeat({ ...state, batch, batches } satisfies TrainingHeartbeat),
      onEpoch: async (p: TrainProgress) => {
        state = {
          epoch: p.epoch,
          epochs: p.epochs,
          loss: p.loss,
          ...(p.checkpoint ? { checkpoint: p.checkpoint } : state.checkpoint ? { checkpoint: state.checkpoint } : {}),
        };
        ctx.heartbeat(state);
        const now = Date.now();
        if (now - lastSignal >= 1000 || p.epoch === p.epochs) {
          lastSignal = now;
          const sent = sendEpoch(req, {
            id: req.label,
            epoch: p.epoch,
            epochs: p.epochs,
            loss: p.loss,
            resumedFromEpoch: p.resumedFromEpoch ?? 0,
            attempt: ctx.info.attempt,
          });
          if (p.epoch === p.epochs) await sent; // the last one lands before the stage's completion
        }
      },
    };
  }

  /** Progress display only: a lost update never fails the stage, and waiting for one is bounded. */
  function sendEpoch(req: StageRequest<unknown>, update: EpochUpdate): Promise<void> {
    if (!deps.client || !req.reportTo) return Promise.resolve();
    const sent = deps.client.workflow
      .getHandle(req.reportTo)
      .signal(stageEpochSignal, update)
      .catch(() => undefined);
    return Promise.race([sent, new Promise<void>((r) => setTimeout(r, 5000).unref())]);
  }

  // Backend selection runs before every tensor stage; its explanation is logged once per process.
  const backendLines = new Set<string>();
  async function backend(choice: Parameters<typeof selectBackend>[0], purpose: 'training' | 'inference'): Promise<BackendInfo> {
    return selectBackend(choice, purpose, (line) => {
      if (backendLines.has(line)) return;
      backendLines.add(line);
      log(line);
    });
  }

  // ---- stages ----

  async function ingestStage(req: StageRequest<IngestParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const p = req.params;
      const ctx = Context.current();
      const spec = await datasetSpec(p.source);
      const manifest = await ingest(spec, join(tmp, 'dataset'), {
        imageSize: p.imageSize,
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(p.limitPerClass !== undefined ? { limitPerClass: p.limitPerClass } : {}),
        onProgress: (done, total) => ctx.heartbeat({ done, total }),
        signal: ctx.cancellationSignal,
      });
      return {
        info: datasetInfo(manifest, `${manifest.size} images, ${manifest.classes.length} classes, ${manifest.width}x${manifest.height}`),
      };
    });
  }

  async function attackStage(req: StageRequest<AttackParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const clean = await scope.dataset();
      const cfg = req.params.attack;
      const { poisoned, truth } = await poisonDataset(clean, cfg);
      const name = `${clean.manifest.name}-${cfg.name}`;
      const manifest = await writeDataset(poisoned, join(tmp, 'dataset'), name);
      await writeFile(join(tmp, 'truth.json'), JSON.stringify(truth) + '\n');
      return {
        info: datasetInfo(
          manifest,
          `${truth.poisoned.length} of ${manifest.size} poisoned (${cfg.name} -> ${clean.classes[cfg.targetClass]})`,
        ),
      };
    });
  }

  async function encoderStage(req: StageRequest<EncoderParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, work, scope) => {
      const p = req.params;
      if (p.kind === 'pretrained') {
        // The model stays where it is (its fingerprint is in the key); the artifact points at it.
        await writeFile(join(tmp, 'pretrained.json'), JSON.stringify({ path: p.path }) + '\n');
        return { info: { figure: `pretrained ${p.path}` } };
      }
      const be = await backend(p.backend, 'training');
      const source = await scope.dataset();
      const { encoder, losses, resumedFromEpoch } = await trainSimclr(source, p.config, p.seed, trainingHooks(req, work));
      try {
        await saveModel(encoder, join(tmp, 'model'));
      } finally {
        encoder.dispose();
      }
      if (resumedFromEpoch) log(`${req.label}: resumed from epoch ${resumedFromEpoch}`);
      return { info: { figure: `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`, backend: be.name }, resumedFromEpoch };
    });
  }

  async function loadEncoder(dir: string, imageSize: number): Promise<LayersModel> {
    const pointer = join(dir, 'pretrained.json');
    const text = await readFile(pointer, 'utf8').catch(() => undefined);
    if (text !== undefined) return loadPretrainedEncoder((JSON.parse(text) as { path: string }).path, imageSize);
    return loadModel(join(dir, 'model'));
  }

  async function featuresStage(req: StageRequest<FeaturesParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const ctx = Context.current();
      const be = await backend(req.params.backend, 'inference');
      const source = await scope.dataset();
      const encoder = await loadEncoder(await input(req, 'encoder'), source.height);
      try {
        const features = await extractFeatures(encoder, source, {
          batchSize: req.params.batchSize,
          signal: ctx.cancellationSignal,
          onBatch: (done, total) => ctx.heartbeat({ batch: done, batches: total }),
        });
        await writeMatrix(tmp, 'features', features);
        return { info: { figure: `${features.rows} x ${features.cols} features`, backend: be.name } };
      } finally {
        encoder.dispose();
      }
    });
  }

  async function flowStage(req: StageRequest<FlowParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, work, scope) => {
      const ctx = Context.current();
      const p = req.params;
      await backend(p.backend, 'training');
      const features = await readMatrix(await input(req, 'features'), 'features');
      const source = await scope.dataset();
      const rows = classMembers(source.labels, p.classIndex);
      if (rows.length === 0)
        throw ApplicationFailure.nonRetryable(`class ${p.classIndex} has no samples: a flow cannot be fitted`, 'PipelineInputError');
      const checkpointFile = join(work, 'flow-checkpoint.json');
      const every = req.options?.checkpointEvery ?? 1;
      const resume = await loadFlowCheckpoint(checkpointFile);
      if (resume) log(`${req.label}: resumed from epoch ${resume.epoch} (attempt ${ctx.info.attempt})`);
      let lastSignal = 0;
      const { flow, nll } = await trainClassFlow(selectRows(features, rows), p.config, p.seed, {
        signal: ctx.cancellationSignal,
        ...(resume ? { resume } : {}),
        onEpoch: async (e) => {
          if (e.epoch % every === 0 && e.epoch < e.epochs) await saveFlowCheckpoint(checkpointFile, await e.checkpoint());
          ctx.heartbeat({ epoch: e.epoch, epochs: e.epochs, loss: e.nll, checkpoint: checkpointFile } satisfies TrainingHeartbeat);
          const now = Date.now();
          if (now - lastSignal >= 1000 || e.epoch === e.epochs) {
            lastSignal = now;
            void sendEpoch(req, {
              id: req.label,
              epoch: e.epoch,
              epochs: e.epochs,
              loss: e.nll,
              resumedFromEpoch: resume?.epoch ?? 0,
              attempt: ctx.info.attempt,
            });
          }
        },
      });
      try {
        await saveFlow(flow, join(tmp, 'flow.json'));
      } finally {
        flow.dispose();
      }
      return {
        info: { figure: `${rows.length} samples, NLL ${nll.at(-1)?.toFixed(3)}` },
        ...(resume ? { resumedFromEpoch: resume.epoch } : {}),
      };
    });
  }

  async function densityStage(req: StageRequest<DensityParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const features = await readMatrix(await input(req, 'features'), 'features');
      const flows: ClassFlow[] = [];
      try {
        for (let y = 0; y < req.params.classes; y++) flows.push(await loadFlow(join(await input(req, `flow-${y}`), 'flow.json')));
        const density = densityMatrix(flows, features);
        await writeMatrix(tmp, 'density', density);
        return { info: { figure: `${density.rows} x ${density.cols} log-densities` } };
      } finally {
        flows.forEach((f) => f.dispose());
      }
    });
  }

  async function detectStage(req: StageRequest<DetectParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const density = await readMatrix(await input(req, 'density'), 'density');
      const source = await scope.dataset();
      const detections = detectTargets(density, source.labels, req.params.config);
      await writeJson(join(tmp, 'detections.json'), detections);
      const targets = detections.filter((d) => d.kind !== 'clean');
      const figure = targets.length
        ? `target${targets.length > 1 ? 's' : ''}: ${targets.map((d) => `${source.classes[d.index]} (${d.kind})`).join(', ')}`
        : 'no target class';
      return { info: { figure, targetClasses: targets.map((d) => d.index), classes: [...source.classes] } };
    });
  }

  const readDetections = async (dir: string) => readJson<ClassDetection[]>(join(dir, 'detections.json'), DETECTION_NUMBERS);
  const readCleansed = async (dir: string): Promise<CleansedEntry[]> =>
    (await readFile(join(dir, 'cleansed.jsonl'), 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as CleansedEntry);

  async function relabelStage(req: StageRequest<RelabelParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const density = await readMatrix(await input(req, 'density'), 'density');
      const detections = await readDetections(await input(req, 'detect'));
      const source = await scope.dataset();
      const scores = poisonScores(density, source.labels);
      const cleansed = splitAndRelabel(source.ids, source.labels, density, scores, detections, req.params.config, source.classes);
      await writeFile(join(tmp, 'cleansed.jsonl'), cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
      const counts = countActions(cleansed);
      return { info: { figure: `kept ${counts.kept}, relabelled ${counts.relabelled}, dropped ${counts.dropped}`, counts } };
    });
  }

  async function retrainStage(req: StageRequest<RetrainParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, work, scope) => {
      const p = req.params;
      const be = await backend(p.backend, 'training');
      const source = await scope.dataset();
      const cleansed = await readCleansed(await input(req, 'relabel'));
      const { model, losses, resumedFromEpoch } = await trainClassifier(source, trainingLabels(cleansed), p.config, {
        seed: p.seed,
        stem: p.stem,
        inputSize: p.imageSize,
        hooks: trainingHooks(req, work),
      });
      try {
        await saveModel(model, join(tmp, 'model'));
      } finally {
        model.dispose();
      }
      if (resumedFromEpoch) log(`${req.label}: resumed from epoch ${resumedFromEpoch}`);
      return { info: { figure: `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`, backend: be.name }, resumedFromEpoch };
    });
  }

  async function evaluateStage(req: StageRequest<EvaluateParams>): Promise<StageOutcome> {
    return compute(req, async (tmp, _work, scope) => {
      const ctx = Context.current();
      const p = req.params;
      const cleansed = await readCleansed(await input(req, 'relabel'));
      const detections = await readDetections(await input(req, 'detect'));
      const flagged = detections.filter((d) => d.kind !== 'clean').map((d) => d.index);
      let evaluation: Evaluation = {};
      let truth: PoisonTruth | undefined;
      if (req.inputs.attack) {
        truth = JSON.parse(await readFile(join(await input(req, 'attack'), 'truth.json'), 'utf8')) as PoisonTruth;
        evaluation = { ...cleansingMetrics(cleansed, truth, flagged) };
      }
      if (req.inputs.model && req.inputs.test) {
        await backend(p.backend, 'inference');
        const test = await scope.dataset('test');
        const model = await loadModel(join(await input(req, 'model'), 'model'));
        try {
          evaluation.acc = accuracy(await predict(model, test, { signal: ctx.cancellationSignal }), test.labels);
          if (p.attack) {
            const attack = await createAttack(p.attack, test.height);
            const triggered = await triggeredTestSet(test, attack, p.attack.targetClass, p.attack.seed);
            evaluation.asr = attackSuccessRate(await predict(model, triggered, { signal: ctx.cancellationSignal }), p.attack.targetClass);
          }
        } finally {
          model.dispose();
        }
      }
      await writeJson(join(tmp, 'evaluation.json'), evaluation);
      const parts = Object.entries(evaluation)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(3) : String(v)}`);
      const metrics: Record<string, number> = {};
      for (const [k, v] of Object.entries(evaluation)) if (typeof v === 'number') metrics[k] = v;
      return { info: { figure: parts.join(', ') || 'nothing to evaluate', metrics } };
    });
  }

  /** Assembles report.json + cleansed.jsonl, keeps them as an artifact and writes them to the output folder. */
  async function reportStage(req: StageRequest<ReportParams>): Promise<StageOutcome> {
    const p = req.params;
    let report: AuditReport | undefined;
    let cleansed: CleansedEntry[] = [];
    const out = await compute(req, async (tmp, _work, scope) => {
      const source = await scope.dataset();
      const detections = await readDetections(await input(req, 'detect'));
      cleansed = await readCleansed(await input(req, 'relabel'));
      const featuresInfo = await readInfo(req.inputs.features as ArtifactRef);
      const evaluation = req.inputs.evaluate
        ? await readJson<Evaluation>(join(await input(req, 'evaluate'), 'evaluation.json'))
        : undefined;
      report = buildReport({
        dataset: { name: source.manifest.name, hash: source.manifest.hash, samples: source.size, classes: source.classes },
        backend: (featuresInfo.backend ?? 'cpu') as AuditReport['backend'],
        config: p.config,
        detections,
        cleansed,
        timings: p.timings,
        ...(evaluation ? { evaluation } : {}),
      });
      await writeAuditOutputs(tmp, report, cleansed);
      return {
        info: {
          figure: `${report.targetClasses.length} target class(es); kept ${report.counts.kept}, relabelled ${report.counts.relabelled}, dropped ${report.counts.dropped}`,
        },
      };
    });
    if (!report) {
      // Same report already in the store (identical timings): reuse its files.
      const dir = store.dir(out.ref);
      report = JSON.parse(await readFile(join(dir, 'report.json'), 'utf8')) as AuditReport;
      cleansed = await readCleansed(dir);
    }
    await writeAuditOutputs(p.output, report, cleansed);
    const outputs = [join(p.output, 'report.json'), join(p.output, 'cleansed.jsonl')];
    log(`${req.label}: wrote ${outputs.join(', ')}`);
    return { ...out, info: { ...out.info, report, outputs } };
  }

  async function probe(req: StageRequest<unknown>): Promise<ProbeResult> {
    const key = await keyOf(req);
    const ref = await store.lookup(req.stage, key);
    if (!ref) return { key };
    return { key, hit: { ref, info: await readInfo(ref), cached: true, seconds: 0 } };
  }

  return {
    probe,
    ingest: ingestStage,
    attack: attackStage,
    encoder: encoderStage,
    features: featuresStage,
    flow: flowStage,
    density: densityStage,
    detect: detectStage,
    relabel: relabelStage,
    retrain: retrainStage,
    evaluate: evaluateStage,
    report: reportStage,
  };
}

/** Cache-key part for inputs outside the store: the dataset files, a pretrained model folder. */
async function externalFingerprint(req: StageRequest<unknown>): Promise<string | undefined> {
  if (req.stage === 'ingest') {
    try {
      return await datasetFingerprint((req.params as IngestParams).source);
    } catch (err) {
      if (err instanceof DatasetError) throw ApplicationFailure.nonRetryable(err.message, 'DatasetError');
      throw err;
    }
  }
  if (req.stage === 'encoder') {
    const p = req.params as EncoderParams;
    if (p.kind === 'pretrained') return folderFingerprint(p.path);
  }
  return undefined;
}

/** The ingest spec of a pipeline's dataset source (the shared CIFAR-10 copy is extracted on first use). */
async function datasetSpec(source: DatasetSource): Promise<DatasetSpec> {
  if (source.format !== 'cifar10') return source;
  const cifar = await ensureCifar10();
  return { format: 'imagefolder', root: source.split === 'train' ? cifar.train : cifar.test };
}

/** What the workflow needs to know of a dataset a stage wrote. */
function datasetInfo(manifest: DatasetManifest, figure: string): StageInfo {
  return { figure, classes: manifest.classes, samples: manifest.size, datasetName: manifest.name, datasetHash: manifest.hash };
}
