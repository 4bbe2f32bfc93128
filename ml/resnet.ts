// ResNet-18 (He et al. 2016), the backbone of the SimCLR encoder (paper step 2) and of the
// retrained classifier (step 9). Built as a tfjs LayersModel so that it saves in the tfjs
// format and runs on any registered backend.
import * as tfl from '@tensorflow/tfjs-layers';
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import { isBackboneOnly, type ResNetStage, type Stem } from './config.js';
import { Rng } from './random.js';
import { BatchNorm } from './batch-norm.js';

export interface ResNetOptions {
  /** 'cifar': 3x3 conv stride 1, no max-pool (32x32 inputs); 'imagenet': 7x7 stride 2 + 3x3 max-pool. */
  stem: Stem;
  /** Channels of the first stage; the four stages have width, 2w, 4w, 8w (64 in the paper). */
  width: number;
  /** Input images are inputSize x inputSize x 3. */
  inputSize: number;
  /** When set, a dense layer maps the pooled features to this many logits. */
  classes?: number;
  /** Seeds every initializer, so the same options give the same initial weights. */
  seed: number;
}

/** Size of the pooled feature vector (the backbone output before any head). */
export function featureDim(width: number): number {
  return 8 * width;
}

/** Name of the layer whose output is the pooled feature vector. */
const FEATURE_LAYER = 'features';

/** The ResNet's four stages, by number: stage s ends in block `s<s>b2` (see buildResNet18). */
export const RESNET_STAGES: readonly ResNetStage[] = [1, 2, 3, 4];

/** Size of the features pooled from `stages`: stage s has width * 2^(s-1) channels. */
export function pooledDim(width: number, stages: readonly ResNetStage[]): number {
  return stages.reduce((sum, s) => sum + width * 2 ** (s - 1), 0);
}

/**
 * ResNet-18: stem, four stages of two basic blocks, global average pooling.
 *
 * Input: [N, S, S, 3] floats in [0, 1]. The model itself maps them to [-1, 1] (a Rescaling
 * layer), so callers never normalise and a saved model carries its own normalisation.
 * Output: features [N, 8 * width], or logits [N, classes] when `classes` is set.
 */
export function buildResNet18(o: ResNetOptions): tfl.LayersModel {
  if (!Number.isInteger(o.width) || o.width < 1) throw new Error(`resnet: width must be a positive integer, got ${o.width}`);
  if (!Number.isInteger(o.inputSize) || o.inputSize < 8) throw new Error(`resnet: inputSize must be an integer >= 8, got ${o.inputSize}`);
  // One seed per initializer, drawn in layer-creation order: deterministic for a given seed.
  const rng = new Rng(o.seed);
  const heNormal = () => tfl.initializers.heNormal({ seed: rng.int(2 ** 31) });

  const conv = (x: SymbolicTensor, filters: number, kernel: number, strides: number, name: string) =>
    tfl.layers
      .conv2d({ filters, kernelSize: kernel, strides, padding: 'same', useBias: false, kernelInitializer: heNormal(), name })
      .apply(x) as SymbolicTensor;
  // Keras defaults are momentum 0.99, epsilon 1e-3; PyTorch's (0.9 i.e. 1 - 0.1, 1e-5) are what the
  // paper's ResNet-18 was trained with.
  // ml/batch-norm.ts: tfjs-layers' BatchNormalization, trained through fused kernels where the backend has them.
  const bn = (x: SymbolicTensor, name: string) => new BatchNorm({ momentum: 0.9, epsilon: 1e-5, name }).apply(x) as SymbolicTensor;
  const relu = (x: SymbolicTensor, name: string) => tfl.layers.reLU({ name }).apply(x) as SymbolicTensor;
  // x[:, ::s, ::s, :], as a 1x1 average pool (a mean of one value is exact, and its gradient
  // routes no ties). A 1x1 'same' conv with stride s reads exactly
  // these pixels (TF pads nothing for a 1x1 kernel), so subsample + stride-1 conv is that conv
  // with the same weights. It avoids oneDNN's strided 1x1 filter-gradient kernel, which corrupts
  // the heap for odd batches and few channels (docs/backends.md).
  const subsample = (x: SymbolicTensor, strides: number, name: string) =>
    strides === 1 ? x : (tfl.layers.averagePooling2d({ poolSize: 1, strides, padding: 'valid', name }).apply(x) as SymbolicTensor);

  const basicBlock = (x: SymbolicTensor, filters: number, strides: number, name: string): SymbolicTensor => {
    const inChannels = x.shape[x.shape.length - 1];
    let y = relu(bn(conv(x, filters, 3, strides, `${name}_conv1`), `${name}_bn1`), `${name}_relu1`);
    y = bn(conv(y, filters, 3, 1, `${name}_conv2`), `${name}_bn2`);
    // Projection shortcut only where the shape changes (option B of the ResNet paper).
    const shortcut =
      strides !== 1 || inChannels !== filters
        ? bn(conv(subsample(x, strides, `${name}_proj_subsample`), filters, 1, 1, `${name}_proj`), `${name}_proj_bn`)
        : x;
    const sum = tfl.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as SymbolicTensor;
    return relu(sum, `${name}_out`);
  };

  const input = tfl.input({ shape: [o.inputSize, o.inputSize, 3], name: 'images' });
  let x = tfl.layers.rescaling({ scale: 2, offset: -1, name: 'normalize' }).apply(input) as SymbolicTensor;
  if (o.stem === 'cifar') {
    x = relu(bn(conv(x, o.width, 3, 1, 'stem_conv'), 'stem_bn'), 'stem_relu');
  } else if (o.stem === 'imagenet') {
    x = relu(bn(conv(x, o.width, 7, 2, 'stem_conv'), 'stem_bn'), 'stem_relu');
    x = tfl.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same', name: 'stem_pool' }).apply(x) as SymbolicTensor;
  } else {
    throw new Error(`resnet: unknown stem '${String(o.stem)}' (expected 'cifar' or 'imagenet')`);
  }
  for (let stage = 0; stage < 4; stage++) {
    const filters = o.width * 2 ** stage;
    x = basicBlock(x, filters, stage === 0 ? 1 : 2, `s${stage + 1}b1`);
    x = basicBlock(x, filters, 1, `s${stage + 1}b2`); // its output layer: stageOutput(stage + 1)
  }
  let out = tfl.layers.globalAveragePooling2d({ name: FEATURE_LAYER }).apply(x) as SymbolicTensor;
  if (o.classes !== undefined) {
    if (!Number.isInteger(o.classes) || o.classes < 2) throw new Error(`resnet: classes must be an integer >= 2, got ${o.classes}`);
    out = tfl.layers
      .dense({ units: o.classes, kernelInitializer: tfl.initializers.glorotUniform({ seed: rng.int(2 ** 31) }), name: 'logits' })
      .apply(out) as SymbolicTensor;
  }
  return tfl.model({ inputs: input, outputs: out, name: o.classes === undefined ? 'resnet18_features' : 'resnet18_classifier' });
}

/**
 * The pooled features of a classifier built by buildResNet18 (its penultimate layer), as a model
 * that shares the classifier's weights: dispose the classifier, not this view.
 */
export function penultimateLayer(classifier: tfl.LayersModel): tfl.LayersModel {
  const pooled = classifier.getLayer(FEATURE_LAYER).output;
  if (Array.isArray(pooled)) throw new Error(`resnet: layer "${FEATURE_LAYER}" of ${classifier.name} has several outputs`);
  return tfl.model({ inputs: classifier.inputs, outputs: pooled, name: `${classifier.name}_penultimate` });
}

/** The layer whose output ends stage `s` (the last block's ReLU, named by buildResNet18). */
const stageOutput = (s: ResNetStage): string => `s${s}b2_out`;

/** The first of `stages` whose output layer `model` lacks; undefined when it has them all. */
function missingStage(model: tfl.LayersModel, stages: readonly ResNetStage[]): ResNetStage | undefined {
  const names = new Set(model.layers.map((l) => l.name));
  return stages.find((s) => !names.has(stageOutput(s)));
}

/** Whether `model` has the stage outputs pooledStages reads (a ResNet-18 built by buildResNet18 does). */
export function hasResNetStages(model: tfl.LayersModel, stages: readonly ResNetStage[]): boolean {
  return missingStage(model, stages) === undefined;
}

/**
 * Features pooled from several stages of a ResNet built by buildResNet18: the global average pool
 * of each listed stage's output, concatenated in stage order, as a model that shares `model`'s
 * weights (dispose the model, not this view). [4] is the model's own pooled features, returned
 * as is. The backbone output is what SimCLR trains to be invariant to crops and colour changes;
 * earlier stages keep the textures and colours a trigger is made of (bench feature-layers).
 */
export function pooledStages(model: tfl.LayersModel, stages: readonly ResNetStage[]): tfl.LayersModel {
  if (stages.length === 0 || stages.some((s, i) => !RESNET_STAGES.includes(s) || (i > 0 && s <= stages[i - 1])))
    throw new Error(`resnet: stages must be distinct, ascending numbers in 1..4, got [${stages.join(', ')}]`);
  if (isBackboneOnly(stages)) return model;
  const missing = missingStage(model, stages);
  if (missing !== undefined)
    throw new Error(
      `resnet: ${model.name} has no layer ${stageOutput(missing)} (stage ${missing}): pooled stages need a ResNet-18 built by this project`,
    );
  const pools = stages.map((s) => {
    const output = model.getLayer(stageOutput(s)).output;
    if (Array.isArray(output)) throw new Error(`resnet: layer ${stageOutput(s)} of ${model.name} has several outputs`);
    return tfl.layers.globalAveragePooling2d({ name: `pooled_stage${s}` }).apply(output) as SymbolicTensor;
  });
  const out = pools.length === 1 ? pools[0] : (tfl.layers.concatenate({ name: 'pooled_stages' }).apply(pools) as SymbolicTensor);
  return tfl.model({ inputs: model.inputs, outputs: out, name: `${model.name}_stages${stages.join('')}` });
}
