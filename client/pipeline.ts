// Pipeline files: YAML validated against the pipeline schema (client/pipeline-schema.ts, the one
// definition of the format: pipelines/schema.json is generated from it), defaults applied, paths
// made absolute. Every problem is reported with the file, the line and the path inside it, and
// nothing is started when there is one (the messages: client/pipeline-errors.ts).
import { open } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { msToNumber, type Duration } from '@temporalio/common';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { LineCounter, parseDocument } from 'yaml';
import {
  defaultAuditConfig,
  defaultSimclrEncoder,
  defenseFeatures,
  DEFENSE_SECTION,
  isBackboneOnly,
  poolsStages,
  relabelModelOf,
  stemForImageSize,
  type AuditConfig,
  type EncoderConfig,
} from '../ml/config.js';
import type { AttackConfig } from '../attacks/types.js';
import { STAGE_SPECS, type QueueKind } from '../workflows/graph.js';
import {
  STAGES,
  TASK_QUEUES,
  type DatasetSource,
  type Pipeline,
  type PipelineTemporalOptions,
  type StageName,
} from '../workflows/types.js';
import { folderOverlap, pathExists, pseudoFileSystem } from '../data/files.js';
import { stateDir, storeRoot } from '../data/paths.js';
import { sourceRoots } from '../data/sources.js';
import { describeErrors, duplicateKeys, MAX_PROBLEMS_SHOWN, PipelineError, position, type PipelineProblem } from './pipeline-errors.js';
import type { RawAudit, RawPipeline, RawSource, RawTemporal } from './pipeline-schema.js';
import { pipelineValidator } from './pipeline-validator.js';

export { PipelineError, type PipelineProblem } from './pipeline-errors.js';

// How Temporal runs each stage by default (queue, heartbeat and start-to-close timeouts) is
// declared with the stage in workflows/graph.ts; a pipeline's `temporal` section overrides it.
const DEFAULT_QUEUES = Object.fromEntries(STAGES.map((s) => [s, STAGE_SPECS[s].queue])) as Record<StageName, QueueKind>;
const DEFAULT_HEARTBEAT = Object.fromEntries(STAGES.map((s) => [s, durationMs(STAGE_SPECS[s].heartbeat)])) as Record<StageName, number>;
const DEFAULT_START_TO_CLOSE = Object.fromEntries(STAGES.map((s) => [s, durationMs(STAGE_SPECS[s].startToClose)])) as Record<
  StageName,
  number
>;

let validator: Promise<ValidateFunction> | undefined;
async function validate(value: unknown): Promise<ErrorObject[]> {
  const v = await (validator ??= pipelineValidator());
  return v(value) ? [] : [...(v.errors ?? [])];
}

/**
 * The largest pipeline file read. A pipeline is a few KB; the limit keeps a wrong or hostile
 * file (a dataset listing, a generated document with millions of keys) from costing minutes
 * and memory before it is refused.
 */
export const MAX_PIPELINE_BYTES = 1024 * 1024;

function checkSize(file: string, bytes: number): void {
  if (bytes > MAX_PIPELINE_BYTES) {
    throw new PipelineError(file, [
      {
        path: '',
        message: `file is ${bytes} bytes, over the ${MAX_PIPELINE_BYTES}-byte (1 MiB) limit for pipeline files (a pipeline is a few KB)`,
      },
    ]);
  }
}

/** Parses, validates and normalises a pipeline file. Throws PipelineError on any problem. */
export async function loadPipeline(file: string): Promise<Pipeline> {
  const abs = resolve(file);
  let text: string;
  try {
    const fh = await open(abs, 'r');
    try {
      const st = await fh.stat();
      // A FIFO or a device has no size to check and may never end.
      if (!st.isFile()) throw new PipelineError(abs, [{ path: '', message: 'not a regular file' }]);
      checkSize(abs, st.size);
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (err instanceof PipelineError) throw err;
    throw new PipelineError(abs, [{ path: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  return parsePipeline(text, abs);
}

/** `text` is the content of `file` (used for messages and to resolve relative paths). */
export async function parsePipeline(text: string, file: string): Promise<Pipeline> {
  checkSize(file, Buffer.byteLength(text, 'utf8'));
  const lineCounter = new LineCounter();
  // uniqueKeys: false, checked by duplicateKeys (linear) instead.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length) {
    const shown: PipelineProblem[] = doc.errors.slice(0, MAX_PROBLEMS_SHOWN).map((e) => {
      const pos = lineCounter.linePos(e.pos[0]);
      return { path: '', line: pos.line, column: pos.col, message: `YAML: ${e.message.split('\n')[0]}` };
    });
    const more = doc.errors.length - shown.length;
    throw new PipelineError(file, more > 0 ? [...shown, { path: '', message: `YAML: ${more} more error(s) not shown` }] : shown);
  }
  const duplicates = duplicateKeys(doc, lineCounter);
  if (duplicates.length) throw new PipelineError(file, duplicates);
  const value: unknown = doc.toJS();
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new PipelineError(file, [{ path: '', line: 1, message: 'expected a mapping (name, dataset, output, ...)' }]);
  }
  const errors = await validate(value);
  if (errors.length) throw new PipelineError(file, describeErrors(errors, doc, lineCounter));

  const raw = value as RawPipeline;
  const base = dirname(file);
  const problems: PipelineProblem[] = [];
  const at = (path: (string | number)[], message: string, preferKey = false) =>
    problems.push({ path: path.join('.'), ...position(doc, lineCounter, path, preferKey), message });

  const dataset = { ...raw.dataset };
  const source = await absoluteSource(sourceOf(dataset), base, ['dataset'], at);
  const testSource = raw.testSet ? await absoluteSource(sourceOf({ ...raw.testSet }), base, ['testSet'], at) : undefined;
  const output = resolve(base, raw.output);
  await checkInputsUntouched(
    output,
    [{ at: 'dataset' as const, source }, ...(testSource ? [{ at: 'testSet' as const, source: testSource }] : [])],
    at,
  );
  // Refused here rather than when the report stage gets there: /proc, /sys and /dev hold no
  // files, and a mkdir under /proc may never return (the stage's deadline would end it an hour
  // of computing later). Cheap: a realpath and a statfs, under the same deadline.
  try {
    const pseudo = await pseudoFileSystem(output);
    if (pseudo)
      at(
        ['output'],
        `output folder ${output} is on a pseudo file system (${pseudo}), which cannot hold files: choose a folder on a disk`,
        true,
      );
  } catch (err) {
    at(['output'], `output folder ${output}: ${(err as Error).message}`, true);
  }
  const audit = auditConfig(raw.audit ?? {}, dataset.imageSize, base);
  if (audit.encoder.kind === 'pretrained' && !(await pathExists(audit.encoder.path))) {
    at(['audit', 'encoder', 'path'], `pretrained encoder not found: ${audit.encoder.path}`);
  }
  if (audit.encoder.kind === 'onnx' && !(await pathExists(audit.encoder.path))) {
    at(['audit', 'encoder', 'path'], `onnx model not found: ${audit.encoder.path}`);
  }
  const { stages } = audit.features;
  if (!poolsStages(audit.encoder) && !isBackboneOnly(stages)) {
    at(
      ['audit', 'features', 'stages'],
      `features.stages [${stages.join(', ')}] pools stages of the ResNet this project builds; a ${audit.encoder.kind} encoder's features are its output: remove features.stages`,
      true,
    );
  }
  // Asked for in the file (the default's components are simply not read by the flows).
  if (raw.audit?.relabel?.pixelComponents && relabelModelOf(audit.relabel) !== 'shared-gaussian') {
    at(
      ['audit', 'relabel', 'pixelComponents'],
      `adds columns to the features of the shared-gaussian relabelling model, and relabel.model ${audit.relabel.model} reads no features: remove pixelComponents or use model shared-gaussian`,
      true,
    );
  }
  if (defenseFeatures(audit) === 'classifier' && !audit.retrain) {
    const section = DEFENSE_SECTION[audit.defense] as string;
    at(
      ['audit', section, 'features'],
      `features: classifier trains a classifier on the dataset with the retrain settings, but retrain is false: give retrain settings or use features: encoder`,
      true,
    );
  }
  if (problems.length) throw new PipelineError(file, problems);

  const pipeline: Pipeline = {
    name: raw.name,
    file,
    dataset: {
      source,
      ...(dataset.limitPerClass !== undefined ? { limitPerClass: dataset.limitPerClass } : {}),
      ...(dataset.name !== undefined ? { name: dataset.name } : {}),
    },
    audit,
    output,
    temporal: temporalOptions(raw.temporal ?? {}),
  };
  if (raw.description !== undefined) pipeline.description = raw.description;
  if (raw.testSet && testSource) {
    pipeline.testSet = {
      source: testSource,
      ...(raw.testSet.limitPerClass !== undefined ? { limitPerClass: raw.testSet.limitPerClass } : {}),
      ...(raw.testSet.name !== undefined ? { name: raw.testSet.name } : {}),
    };
  }
  if (raw.attack) pipeline.attack = resolveAttack(raw.attack, base);
  return pipeline;
}

function sourceOf(raw: RawSource): RawSource {
  const { format, root, files, path, classes, split, followSymlinksOutsideRoot } = raw;
  return { format, root, files, path, classes, split, followSymlinksOutsideRoot };
}

/**
 * Input datasets are never written to: the output folder, the artifact store and the state
 * folder may not be a folder a dataset is read from, lie inside one or contain one. Compared
 * by real path (links resolved), so another name for the same folder is caught too. An output
 * inside an ImageFolder root would otherwise become an extra class (or a non-image file) of
 * the next run.
 */
async function checkInputsUntouched(
  output: string,
  sets: { at: 'dataset' | 'testSet'; source: DatasetSource }[],
  problem: (path: (string | number)[], message: string, preferKey?: boolean) => void,
): Promise<void> {
  // `key`: where a problem is reported. The output is the file's own setting; the store and the
  // state folder come from the environment, so their problems point at the dataset's folder.
  const written: { what: string; dir: string; fix: string; key?: string[] }[] = [
    { what: `output folder ${output}`, dir: output, fix: 'choose an output folder outside it', key: ['output'] },
    {
      what: `artifact store ${storeRoot()}`,
      dir: storeRoot(),
      fix: 'set BACKDOOR_AUDIT_STORE (default: <state folder>/artifacts) to a folder outside it',
    },
    {
      what: `state folder ${stateDir()}`,
      dir: stateDir(),
      fix: 'set BACKDOOR_AUDIT_STATE (default: .state in the checkout) to a folder outside it',
    },
  ];
  for (const set of sets) {
    for (const root of sourceRoots(set.source)) {
      const key = [set.at, ...root.key];
      for (const w of written) {
        const overlap = await folderOverlap(w.dir, root.dir);
        if (!overlap) continue;
        const how = overlap === 'same' ? 'is' : overlap === 'inside' ? 'is inside' : 'contains';
        const message = `${w.what} ${how} the ${set.at === 'dataset' ? 'training set' : 'test set'}'s folder ${root.dir} (${key.join('.')}); input datasets are never written to: ${w.fix}`;
        if (w.key) problem(w.key, message, true);
        else problem(key, message);
      }
    }
  }
}

/** The source with its paths made absolute (relative to the pipeline file), each checked to exist. */
async function absoluteSource(
  raw: RawSource,
  base: string,
  at: string[],
  problem: (path: (string | number)[], message: string) => void,
): Promise<DatasetSource> {
  const abs = (p: string) => resolve(base, p);
  const classes = raw.classes ? { classes: raw.classes } : {};
  // Only when set: the source is part of the ingest's cache key, which stays as it was otherwise.
  const follow = raw.followSymlinksOutsideRoot ? { followSymlinksOutsideRoot: true } : {};
  let out: DatasetSource;
  switch (raw.format) {
    case 'imagefolder':
      out = { format: 'imagefolder', root: abs(raw.root as string), ...follow };
      if (!(await pathExists(out.root))) problem([...at, 'root'], `folder not found: ${out.root}`);
      return out;
    case 'cifar-binary':
      out = { format: 'cifar-binary', files: (raw.files as string[]).map(abs), ...classes };
      for (const [i, f] of out.files.entries()) if (!(await pathExists(f))) problem([...at, 'files', i], `file not found: ${f}`);
      return out;
    case 'manifest':
      out = { format: 'manifest', path: abs(raw.path as string), ...(raw.root ? { root: abs(raw.root) } : {}), ...classes, ...follow };
      if (!(await pathExists(out.path))) problem([...at, 'path'], `file not found: ${out.path}`);
      return out;
    case 'cifar10':
      return { format: 'cifar10', split: raw.split as 'train' | 'test' };
  }
}

function resolveAttack(attack: AttackConfig, base: string): AttackConfig {
  // A trigger given as a path is relative to the pipeline; bare file names stay as they are
  // (they name one of the shared triggers).
  if ('trigger' in attack && attack.trigger && /[\\/]/.test(attack.trigger) && !isAbsolute(attack.trigger)) {
    return { ...attack, trigger: resolve(base, attack.trigger) };
  }
  return { ...attack };
}

function auditConfig(raw: RawAudit, imageSize: number, base: string): AuditConfig {
  const d = defaultAuditConfig;
  let encoder: EncoderConfig;
  if (raw.encoder?.kind === 'pretrained') {
    encoder = { kind: 'pretrained', path: resolve(base, raw.encoder.path as string) };
  } else if (raw.encoder?.kind === 'onnx') {
    const e = raw.encoder;
    // Defaults written out: the cache key and report.json say how the model was fed.
    encoder = {
      kind: 'onnx',
      path: resolve(base, e.path as string),
      inputSize: e.inputSize as number,
      mean: e.mean as [number, number, number],
      std: e.std as [number, number, number],
      ...(e.output !== undefined ? { output: e.output } : {}),
      layout: e.layout ?? 'nchw',
      provider: e.provider ?? 'cpu',
    };
  } else if (raw.encoder?.kind === 'reuse') {
    encoder = { kind: 'reuse', from: raw.encoder.from as string };
  } else {
    // The stem follows the image size unless the file says otherwise (3x3 stem for small images).
    const stem = stemForImageSize(imageSize);
    encoder = { ...defaultSimclrEncoder, stem, ...(raw.encoder ?? {}), kind: 'simclr' } as EncoderConfig;
  }
  // A pretrained or ONNX encoder has no ResNet stages of ours: its features are its output.
  const defaultStages = poolsStages(encoder) ? d.features.stages : [4 as const];
  const config: AuditConfig = {
    seed: raw.seed ?? d.seed,
    backend: raw.backend ?? d.backend,
    imageSize,
    encoder,
    // In stage order whatever the file's order: the same features, the same cache key.
    features: {
      stages: [...(raw.features?.stages ?? defaultStages)].sort((a, b) => a - b),
      flipAverage: raw.features?.flipAverage ?? d.features.flipAverage,
    },
    flow: { ...d.flow, ...(raw.flow ?? {}) },
    detection: { ...d.detection, ...(raw.detection ?? {}) },
    relabel: { ...d.relabel, ...(raw.relabel ?? {}) },
    spectralSignatures: { ...d.spectralSignatures, ...(raw.spectralSignatures ?? {}) },
    activationClustering: { ...d.activationClustering, ...(raw.activationClustering ?? {}) },
    knnConsistency: { ...d.knnConsistency, ...(raw.knnConsistency ?? {}) },
    defense: raw.defense ?? d.defense,
  };
  if (raw.retrain !== false && d.retrain) config.retrain = { ...d.retrain, ...(raw.retrain ?? {}) };
  return config;
}

function temporalOptions(raw: RawTemporal): PipelineTemporalOptions {
  const perStage = (defaults: Record<StageName, number>, given: Partial<Record<StageName, number | string>> = {}) =>
    Object.fromEntries(STAGES.map((s) => [s, given[s] === undefined ? defaults[s] : durationMs(given[s])])) as Record<StageName, number>;
  return {
    ...(raw.workflowId ? { workflowId: raw.workflowId } : {}),
    taskQueues: { cpu: raw.taskQueues?.cpu ?? TASK_QUEUES.cpu, gpu: raw.taskQueues?.gpu ?? TASK_QUEUES.gpu },
    stageQueues: { ...DEFAULT_QUEUES, ...(raw.stageQueues ?? {}) },
    heartbeatTimeouts: perStage(DEFAULT_HEARTBEAT, raw.heartbeatTimeouts),
    startToCloseTimeouts: perStage(DEFAULT_START_TO_CLOSE, raw.startToCloseTimeouts),
    maximumAttempts: raw.maximumAttempts ?? 5,
    checkpointEvery: raw.checkpointEvery ?? 1,
    ...(raw.flowGroupSize !== undefined ? { flowGroupSize: raw.flowGroupSize } : {}),
  };
}

/**
 * Milliseconds from a number (ms) or a duration string such as `30s`, `5m`, `1.5h`, `2 days`,
 * read as Temporal reads its own durations (msToNumber, the `ms` package).
 */
export function durationMs(value: number | string): number {
  try {
    // Duration's string half is `ms`'s grammar as a type; msToNumber checks it at run time anyway.
    return msToNumber(value as Duration);
  } catch {
    throw new Error(`not a duration: ${JSON.stringify(value)} (use e.g. 500ms, 30s, 5m, 2h)`);
  }
}
