// The pipeline file's format, defined once: client/pipeline.ts validates with this object (ajv)
// and takes the raw file types from it; pipelines/schema.json (for editors' YAML language
// servers) is generated from it by `npm run schema` (scripts/write-schema.ts), and a test fails
// when the committed file differs.
//
// The layout is the JSON Schema's own (named `definitions` reached by `$ref`, if/then variants,
// `not` for forbidden keys) because describeErrors reads ajv's keywords, schema paths ('retrain',
// 'duration') and the `not` schemas to word its messages. The builders for those constructs are in
// client/schema-builders.ts, the `attack:` section in client/attack-schema.ts.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Type, { type Static, type TSchema, type TSchemaOptions } from 'typebox';
import type { AttackConfig, AttackName } from '../attacks/types.js';
import type { BackendChoice } from '../backend/backend.js';
import { DEFENSE_NAMES, type DefenseName } from '../ml/defenses/index.js';
import type {
  DetectionConfig,
  EncoderConfig,
  FeaturesConfig,
  FlowConfig,
  OnnxEncoderConfig,
  RelabelConfig,
  RetrainConfig,
  SimclrEncoderConfig,
} from '../ml/config.js';
import type { ActivationClusteringConfig, KnnConsistencyConfig, SpectralSignaturesConfig } from '../ml/config.js';
import { STAGES, type DatasetSource as WorkflowDatasetSource, type QueueKind, type StageName } from '../workflows/types.js';
import { Attack } from './attack-schema.js';
import { definition, forbid, fraction, nonEmpty, oneOf, optional, positive, positiveInt, rgb, when } from './schema-builders.js';

/** The generated file (committed, for editors). */
export const schemaFile = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'pipelines', 'schema.json');

// ---- definitions ----

const DatasetSource = definition(
  'datasetSource',
  Type.Object(
    {
      format: Type.Enum(['imagefolder', 'cifar-binary', 'manifest', 'cifar10']),
      root: optional(nonEmpty()),
      files: optional(Type.Array(nonEmpty(), { minItems: 1 })),
      path: optional(nonEmpty()),
      classes: optional(Type.Array(nonEmpty(), { minItems: 2 })),
      split: optional(Type.Enum(['train', 'test'])),
      followSymlinksOutsideRoot: optional(
        Type.Boolean({
          description:
            'Follow symbolic links under the dataset root that lead outside it (default false: such a link is an error naming it and its target; links that stay inside the root are always followed).',
        }),
      ),
      // Declared (empty) so that additionalProperties admits them; dataset and testSet constrain them.
      imageSize: optional(Type.Unknown()),
      limitPerClass: optional(Type.Unknown()),
      name: optional(Type.Unknown()),
    },
    {
      additionalProperties: false,
      allOf: [
        when('format', 'imagefolder', { required: ['root'], ...forbid('files', 'path', 'split', 'classes') }),
        when('format', 'cifar-binary', { required: ['files'], ...forbid('root', 'path', 'split', 'followSymlinksOutsideRoot') }),
        when('format', 'manifest', { required: ['path'], ...forbid('files', 'split') }),
        when('format', 'cifar10', { required: ['split'], ...forbid('root', 'files', 'path', 'classes', 'followSymlinksOutsideRoot') }),
      ],
    },
  ),
);

const Retrain = Type.Object(
  {
    width: optional(positiveInt()),
    epochs: optional(positiveInt()),
    batchSize: optional(positiveInt()),
    lr: optional(positive()),
    momentum: optional(fraction()),
    weightDecay: optional(Type.Number({ minimum: 0 })),
    milestones: optional(Type.Array(positiveInt())),
  },
  { additionalProperties: false },
);

/** What a feature-space baseline reads (ml/config.ts DefenseFeatures). */
const DefenseFeaturesSchema = Type.Enum(['encoder', 'classifier'], {
  description:
    "Features: the audit's encoder's (default), or the penultimate layer of a classifier trained on the dataset as labelled, with the retrain settings (the baseline papers' setting).",
});

/** The encoder keys only `kind: onnx` takes. */
const ONNX_KEYS = ['inputSize', 'mean', 'std', 'output', 'layout', 'provider'] as const;

const Audit = definition(
  'audit',
  Type.Object(
    {
      seed: optional(Type.Integer()),
      backend: optional(Type.Enum(['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'])),
      encoder: optional(
        Type.Object(
          {
            kind: Type.Enum(['simclr', 'pretrained', 'onnx', 'reuse']),
            width: optional(positiveInt()),
            stem: optional(Type.Enum(['cifar', 'imagenet'])),
            epochs: optional(positiveInt()),
            batchSize: optional(Type.Integer({ minimum: 2 })),
            lr: optional(positive()),
            temperature: optional(positive()),
            projectionDim: optional(positiveInt()),
            path: optional(nonEmpty()),
            inputSize: optional(positiveInt({ description: 'onnx: side in pixels the model takes; images are resized to it (bilinear).' })),
            mean: optional(
              rgb(Type.Number(), { description: 'onnx: per-channel R, G, B mean on the [0, 1] scale, as torchvision Normalize.' }),
            ),
            std: optional(rgb(positive(), { description: 'onnx: per-channel R, G, B std on the [0, 1] scale, as torchvision Normalize.' })),
            output: optional(
              nonEmpty({ description: 'onnx: the model output taken as features (default: its first), flattened to [N, D].' }),
            ),
            layout: optional(Type.Enum(['nchw', 'nhwc'], { description: "onnx: the input's layout (default nchw, PyTorch's)." })),
            provider: optional(
              Type.Enum(['cpu', 'cuda'], {
                description:
                  "onnx: ONNX Runtime's execution provider (default cpu); cuda where its libraries load, else CPU with a warning.",
              }),
            ),
            warmStart: optional(
              Type.Enum(['previous'], {
                description:
                  'SimCLR: start from the encoder of the last audit whose report.json is in `output` and train `epochs` more (from scratch when there is none, saying why).',
              }),
            ),
            from: optional(
              Type.String({
                pattern: '^(previous|[0-9a-f]{64})$',
                description:
                  "reuse: 'previous' (the encoder of the audit whose report.json is in `output`) or an encoder artifact key (report.json `artifacts.encoder`).",
              }),
            ),
          },
          {
            additionalProperties: false,
            allOf: [
              when('kind', 'pretrained', { required: ['path'], ...forbid('width', 'epochs', 'stem') }),
              // A bare `not: {required}` as before (describeErrors: "key combination not allowed").
              when('kind', 'simclr', { not: { required: ['path'] } }),
              when('kind', 'simclr', forbid('from', ...ONNX_KEYS)),
              when('kind', 'pretrained', forbid('warmStart', 'from', ...ONNX_KEYS)),
              when('kind', 'onnx', {
                required: ['path', 'inputSize', 'mean', 'std'],
                ...forbid('width', 'stem', 'epochs', 'batchSize', 'lr', 'temperature', 'projectionDim', 'warmStart', 'from'),
              }),
              when('kind', 'reuse', {
                required: ['from'],
                ...forbid('width', 'stem', 'epochs', 'batchSize', 'lr', 'temperature', 'projectionDim', 'path', 'warmStart', ...ONNX_KEYS),
              }),
            ],
          },
        ),
      ),
      features: optional(
        Type.Object(
          {
            stages: optional(
              Type.Array(Type.Union([Type.Literal(1), Type.Literal(2), Type.Literal(3), Type.Literal(4)]), {
                minItems: 1,
                uniqueItems: true,
                description:
                  "ResNet stages (1-4) whose global average pools, concatenated, are the features: default [2, 3, 4]; [4] is the backbone output (the paper's, and a pretrained or onnx encoder's only choice).",
              }),
            ),
            flipAverage: optional(
              Type.Boolean({
                description:
                  "Each sample's features are the mean of the encoder's outputs on the image and on its horizontal mirror (any encoder; a second inference pass).",
              }),
            ),
          },
          { additionalProperties: false },
        ),
      ),
      flow: optional(
        Type.Object(
          {
            epochs: optional(positiveInt()),
            batchSize: optional(positiveInt()),
            lr: optional(positive()),
            hidden: optional(positiveInt()),
          },
          { additionalProperties: false },
        ),
      ),
      detection: optional(
        Type.Object(
          {
            ndNormalization: optional(Type.Enum(['median-ratio', 'own-gap', 'robust-z', 'rank-z'])),
            betaND: optional(Type.Number()),
            betaD: optional(fraction()),
            bins: optional(Type.Integer({ minimum: 2 })),
            lambda: optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
          },
          { additionalProperties: false },
        ),
      ),
      relabel: optional(
        Type.Object(
          {
            alpha: optional(Type.Number({ exclusiveMinimum: 0, maximum: 0.5 })),
            scoreReference: optional(
              Type.Enum(['max-foreign', 'median-foreign'], {
                description: "Poison score: own log density minus the other classes' maximum (the paper) or median (default).",
              }),
            ),
            model: optional(
              Type.Enum(['flows', 'shared-gaussian'], {
                description:
                  "Which model picks the class a non-disruptive target's poisoned samples are relabelled to: the other classes' flows (the paper) or per-class Gaussians on the features with one shared covariance, fitted on the samples kept as clean (default).",
              }),
            ),
            pixelComponents: optional(
              Type.Integer({
                minimum: 0,
                maximum: 768,
                description:
                  "With model shared-gaussian: this many leading principal components of the images' 16x16 thumbnails are appended to the features the Gaussians relabel with (default 64; 0: the features alone).",
              }),
            ),
          },
          { additionalProperties: false },
        ),
      ),
      // Baseline defenses' sections (read only when `defense` names them; ml/config.ts says what each means).
      spectralSignatures: optional(
        Type.Object(
          {
            removeFraction: optional(
              Type.Number({
                exclusiveMinimum: 0,
                exclusiveMaximum: 1,
                description: 'Share of every class removed: 1.5 x the assumed poison rate (Tran et al. 2018); default 0.15.',
              }),
            ),
            features: optional(DefenseFeaturesSchema),
          },
          { additionalProperties: false },
        ),
      ),
      activationClustering: optional(
        Type.Object(
          {
            dims: optional(positiveInt({ description: 'Dimensions each class is reduced to (PCA) before 2-means; default 10.' })),
            sizeThreshold: optional(
              Type.Number({
                exclusiveMinimum: 0,
                exclusiveMaximum: 0.5,
                description: 'A class is a target when its smaller cluster is at most this share of it; default 0.35.',
              }),
            ),
            silhouetteThreshold: optional(
              Type.Number({
                minimum: -1,
                maximum: 1,
                description: '...and the split has at least this mean silhouette; -1: no silhouette test; default 0.1.',
              }),
            ),
            features: optional(DefenseFeaturesSchema),
          },
          { additionalProperties: false },
        ),
      ),
      knnConsistency: optional(
        Type.Object(
          {
            k: optional(positiveInt({ description: 'Nearest neighbours (cosine) consulted; default 10.' })),
            disagreeFraction: optional(
              Type.Number({
                minimum: 0,
                exclusiveMaximum: 1,
                description: 'A sample is inconsistent when more than this share of its neighbours carry another label; default 0.5.',
              }),
            ),
            relabelFraction: optional(
              Type.Number({
                exclusiveMinimum: 0.5,
                maximum: 1,
                description: 'Relabelled when at least this share carry one other label, removed otherwise; default 0.7.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
      ),
      defense: optional(
        Type.Unsafe<DefenseName>(
          Type.Enum(DEFENSE_NAMES, {
            description: "Which registered defense splits the training set (ml/defenses/); default: the paper's.",
          }),
        ),
      ),
      retrain: optional(
        oneOf([Type.Literal(false), Retrain], {
          description: "false: stop after the cleansed manifest; an object (possibly empty) is merged onto the paper's retrain settings.",
        }),
      ),
    },
    {
      description: "AuditConfig without imageSize (taken from dataset.imageSize); every omitted field keeps defaultAuditConfig's value.",
      additionalProperties: false,
    },
  ),
);

/**
 * Strings that `ms` (what Temporal's msToNumber uses) parses to a non-negative duration: a
 * number, optional spaces, a lower-case unit in its short or long form. ms also reads bare
 * numbers and upper-case units; they are left out, as YAML numbers already are milliseconds
 * and `5M` (minutes to ms) reads like months.
 */
const DURATION_PATTERN =
  '^([0-9]+|[0-9]*\\.[0-9]+) *(ms|msecs?|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?|y|yrs?|years?)$';

const Duration = definition(
  'duration',
  oneOf([positiveInt(), Type.String({ pattern: DURATION_PATTERN })], {
    description: 'Milliseconds, or a duration string such as 30s, 5m, 2h, 1.5h, 500ms, 2 days (the units Temporal accepts).',
  }),
);

const StageMap = definition('stageMap', Type.Object({}, { propertyNames: Type.Enum([...STAGES]) }));

/** Stage name -> `value`; an unknown stage fails `propertyNames` (reported as "unknown stage"). */
function stageMap<V extends TSchema>(value: V, options: TSchemaOptions = {}) {
  return Type.Unsafe<Partial<Record<StageName, Static<V>>>>({ allOf: [StageMap.ref], additionalProperties: value, ...options });
}

const Temporal = definition(
  'temporal',
  Type.Object(
    {
      workflowId: optional(
        nonEmpty({ maxLength: 200, description: 'Fixed workflow id; default: derived from the pipeline and dataset identity.' }),
      ),
      taskQueues: optional(Type.Object({ cpu: optional(nonEmpty()), gpu: optional(nonEmpty()) }, { additionalProperties: false })),
      stageQueues: optional(
        stageMap(Type.Enum(['cpu', 'gpu']), {
          description: 'Which queue runs each stage (default: encoder and retrain on gpu, the rest on cpu).',
        }),
      ),
      heartbeatTimeouts: optional(stageMap(Duration.ref)),
      startToCloseTimeouts: optional(stageMap(Duration.ref)),
      maximumAttempts: optional(
        positiveInt({ description: 'Attempts per stage activity (0 = unlimited is not allowed: a broken stage must end the run).' }),
      ),
      checkpointEvery: optional(positiveInt({ description: 'Epochs between checkpoints of training stages.' })),
      flowGroupSize: optional(
        positiveInt({
          description:
            "Classes whose flows one activity trains together as one batched model (1: one per class). Default: the classes split across the default CPU worker's 2 slots, at most 64 per group.",
        }),
      ),
    },
    { additionalProperties: false },
  ),
);

// ---- the file ----

export const PipelineSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$',
      maxLength: 100,
      description: 'Pipeline name: shown in the memo, part of the workflow id.',
    }),
    description: optional(Type.String()),
    dataset: Type.Intersect([
      DatasetSource.ref,
      Type.Object({
        imageSize: Type.Integer({
          minimum: 8,
          maximum: 1024,
          description: 'Images are resized to imageSize x imageSize at ingest.',
        }),
        limitPerClass: optional(positiveInt({ description: 'Keep at most this many images per class (the first ones in id order).' })),
        name: optional(nonEmpty({ description: "Dataset name (search attribute BackdoorDataset); default: the source's own name." })),
      }),
    ]),
    testSet: optional(
      Type.Intersect(
        [
          DatasetSource.ref,
          Type.Object({ limitPerClass: optional(positiveInt()), name: optional(nonEmpty()) }, { not: { required: ['imageSize'] } }),
        ],
        {
          description: 'Clean test set for ACC (and, with an attack, the triggered ASR set). Same image size as the dataset.',
        },
      ),
    ),
    attack: optional(Attack.ref),
    audit: optional(Audit.ref),
    output: nonEmpty({ description: 'Folder that receives report.json and cleansed.jsonl.' }),
    temporal: optional(Temporal.ref),
  },
  {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://backdoor-audit.local/pipeline.schema.json',
    title: 'backdoor-audit pipeline',
    description:
      "One audit: which dataset, optionally which attack to apply first (evaluation), the method's configuration (merged onto defaultAuditConfig), where the outputs go and how Temporal runs the stages. Relative paths are relative to the pipeline file.",
    additionalProperties: false,
    definitions: Object.fromEntries([DatasetSource, Attack, Audit, Duration, StageMap, Temporal].map((d) => [d.name, d.schema])),
  },
);

// ---- the file's shape after validation ----

export type RawPipeline = Static<typeof PipelineSchema>;
export type RawSource = Static<typeof DatasetSource.schema>;
export type RawAudit = Static<typeof Audit.schema>;
export type RawTemporal = Static<typeof Temporal.schema>;

// The config types the file is merged onto are written by hand (ml/config.ts, attacks/types.ts,
// workflows/types.ts): this fails to compile when a key or an allowed value is added to one
// side only.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Expect<T extends true> = T;
type Section<K extends keyof RawAudit> = Required<Exclude<NonNullable<RawAudit[K]>, false>>;
type KeysOf<U> = U extends unknown ? keyof U : never;
type RawAttack = NonNullable<RawPipeline['attack']>;
type OnnxKeys = Exclude<keyof OnnxEncoderConfig, 'kind' | 'path'>;
export type SchemaMatchesConfig = [
  Expect<Same<Section<'flow'>, FlowConfig>>,
  Expect<Same<Section<'features'>, FeaturesConfig>>,
  Expect<Same<Section<'detection'>, DetectionConfig>>,
  Expect<Same<Section<'relabel'>, Required<RelabelConfig>>>,
  Expect<Same<Section<'spectralSignatures'>, SpectralSignaturesConfig>>,
  Expect<Same<Section<'activationClustering'>, ActivationClusteringConfig>>,
  Expect<Same<Section<'knnConsistency'>, KnnConsistencyConfig>>,
  Expect<Same<Section<'retrain'>, RetrainConfig>>,
  Expect<Same<Omit<Section<'encoder'>, 'kind' | 'path' | 'from' | OnnxKeys>, Required<Omit<SimclrEncoderConfig, 'kind'>>>>,
  Expect<Same<Pick<Section<'encoder'>, OnnxKeys>, Required<Omit<OnnxEncoderConfig, 'kind' | 'path'>>>>,
  Expect<Same<Section<'encoder'>['kind'], EncoderConfig['kind']>>,
  Expect<Same<Section<'backend'>, BackendChoice>>,
  Expect<Same<RawAttack['name'], AttackName>>,
  Expect<Same<keyof RawAttack, KeysOf<AttackConfig>>>,
  Expect<Same<RawSource['format'], WorkflowDatasetSource['format']>>,
  Expect<Same<Section<'seed'>, number>>,
  Expect<Same<NonNullable<NonNullable<RawTemporal['stageQueues']>[StageName]>, QueueKind>>,
];
