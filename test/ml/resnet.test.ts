import { expect } from 'chai';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend } from '../../backend/backend.js';
import { CHECKPOINT_FILE, loadCheckpoint, saveCheckpoint } from '../../ml/checkpoint.js';
import type { Stem } from '../../ml/config.js';
import { registerCpuKernels } from '../../backend/cpu-kernels.js';
import { loadPretrainedEncoder } from '../../ml/encoder.js';
import { loadModel, saveModel } from '../../ml/model-io.js';
import { Rng } from '../../ml/random.js';
import { buildResNet18, featureDim, penultimateLayer, pooledDim, pooledStages } from '../../ml/resnet.js';

before(async () => {
  await selectBackend('cpu', 'training', () => {});
});

const values = (t: tf.Tensor) => Array.from(t.dataSync());
const randomImages = (n: number, s: number, seed: number) => {
  const rng = new Rng(seed);
  return tf.tensor4d(
    Float32Array.from({ length: n * s * s * 3 }, () => rng.next()),
    [n, s, s, 3],
  );
};

/** Parameter count of ResNet-18 from its definition, counted independently of the code. */
function expectedParams(stem: Stem, w: number, classes?: number): number {
  const bn = (c: number) => 4 * c; // gamma, beta, moving mean, moving variance
  const k = stem === 'cifar' ? 3 : 7;
  let total = k * k * 3 * w + bn(w);
  let cin = w;
  for (let stage = 0; stage < 4; stage++) {
    const c = w * 2 ** stage;
    // block 1: two 3x3 convs, plus a 1x1 projection where the shape changes (stages 2-4)
    total += 9 * cin * c + bn(c) + 9 * c * c + bn(c);
    if (cin !== c || stage > 0) total += cin * c + bn(c);
    // block 2: two 3x3 convs
    total += 2 * (9 * c * c + bn(c));
    cin = c;
  }
  if (classes) total += 8 * w * classes + classes;
  return total;
}

describe('buildResNet18', () => {
  it('gives [N, 8w] features for the CIFAR stem at 32x32 and the ImageNet stem at 224x224', () => {
    const cifar = buildResNet18({ stem: 'cifar', width: 4, inputSize: 32, seed: 1 });
    const y = cifar.predict(randomImages(3, 32, 1)) as tf.Tensor;
    expect(y.shape).to.deep.equal([3, featureDim(4)]);
    expect(featureDim(64)).to.equal(512);
    const imagenet = buildResNet18({ stem: 'imagenet', width: 2, inputSize: 224, seed: 1 });
    const z = imagenet.predict(randomImages(1, 224, 2)) as tf.Tensor;
    expect(z.shape).to.deep.equal([1, 16]);
    // 224 -> 112 (7x7 stride 2) -> 56 (max-pool) -> 56, 28, 14, 7 across the stages.
    expect(imagenet.getLayer('stem_pool').outputShape).to.deep.equal([null, 56, 56, 2]);
    expect(imagenet.getLayer('s4b2_out').outputShape).to.deep.equal([null, 7, 7, 16]);
    expect(cifar.getLayer('s4b2_out').outputShape).to.deep.equal([null, 4, 4, 32]);
    // Pooled post-ReLU activations are non-negative.
    expect(tf.min(y).dataSync()[0]).to.be.at.least(0);
    [cifar, imagenet].forEach((m) => m.dispose());
  });

  it('has the parameter count of ResNet-18 for every width, stem and head', () => {
    for (const stem of ['cifar', 'imagenet'] as const) {
      for (const width of [2, 4, 8]) {
        const m = buildResNet18({ stem, width, inputSize: 32, seed: 0 });
        expect(m.countParams(), `${stem} width ${width}`).to.equal(expectedParams(stem, width));
        m.dispose();
      }
    }
    const head = buildResNet18({ stem: 'cifar', width: 4, inputSize: 32, classes: 10, seed: 0 });
    expect(head.countParams()).to.equal(expectedParams('cifar', 4, 10));
    expect(head.outputs[0].shape).to.deep.equal([null, 10]);
    // Width 64 is the paper's ResNet-18: 11.17M parameters (11,173,962 with a 10-class head + BN statistics).
    expect(expectedParams('cifar', 64, 10)).to.equal(11_173_962 + 9_600);
    head.dispose();
  });

  it('initialises from the seed: same seed same weights, other seed other weights', () => {
    const a = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 7 });
    const b = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 7 });
    const c = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 8 });
    a.getWeights().forEach((w, i) => expect(values(b.getWeights()[i])).to.deep.equal(values(w)));
    expect(values(c.getWeights()[0])).to.not.deep.equal(values(a.getWeights()[0]));
    [a, b, c].forEach((m) => m.dispose());
  });

  it("exposes a classifier's penultimate layer: the pooled features its logits are an affine map of", () => {
    const classifier = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 5 });
    const x = randomImages(4, 16, 3);
    const view = penultimateLayer(classifier);
    const features = view.predict(x) as tf.Tensor2D;
    expect(features.shape).to.deep.equal([4, featureDim(2)]);
    const [kernel, bias] = classifier.getLayer('logits').getWeights();
    const logits = classifier.predict(x) as tf.Tensor;
    const affine = tf.add(tf.matMul(features, kernel as tf.Tensor2D), bias);
    values(affine).forEach((v, i) => expect(v).to.be.closeTo(values(logits)[i], 1e-4));
    // A view on the same weights, not a copy: training the classifier moves its features.
    classifier.getLayer('s1b1_conv1').setWeights(
      classifier
        .getLayer('s1b1_conv1')
        .getWeights()
        .map((w) => tf.mul(w, 2)),
    );
    expect(values(view.predict(x) as tf.Tensor)).to.not.deep.equal(values(features));
    classifier.dispose();
  });

  it('pools chosen stages: each stage the mean of its output over the image, stage 4 the backbone output', () => {
    const encoder = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, seed: 3 });
    const x = randomImages(3, 16, 5);
    expect(pooledStages(encoder, [4])).to.equal(encoder);
    const view = pooledStages(encoder, [2, 4]);
    const pooled = view.predict(x) as tf.Tensor2D;
    expect(pooled.shape)
      .to.deep.equal([3, pooledDim(2, [2, 4])])
      .and.to.deep.equal([3, 4 + 16]);
    const stage2 = tfl.model({ inputs: encoder.inputs, outputs: encoder.getLayer('s2b2_out').output as tfl.SymbolicTensor });
    const expected = tf.concat([tf.mean(stage2.predict(x) as tf.Tensor4D, [1, 2]), encoder.predict(x) as tf.Tensor2D], 1);
    values(pooled).forEach((v, i) => expect(v).to.be.closeTo(values(expected)[i], 1e-5));
    encoder.dispose();
  });

  it('refuses stages out of order or out of range, and a model that is not this ResNet', () => {
    const encoder = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, seed: 3 });
    expect(() => pooledStages(encoder, [])).to.throw(/stages must be/);
    expect(() => pooledStages(encoder, [4, 2] as never)).to.throw(/stages must be/);
    expect(() => pooledStages(encoder, [5] as never)).to.throw(/stages must be/);
    const input = tfl.input({ shape: [16, 16, 3] });
    const other = tfl.model({
      inputs: input,
      outputs: tfl.layers.globalAveragePooling2d({}).apply(input) as tfl.SymbolicTensor,
      name: 'other',
    });
    expect(() => pooledStages(other, [3, 4])).to.throw(/other has no layer s3b2_out/);
    encoder.dispose();
  });

  it('rejects bad options', () => {
    expect(() => buildResNet18({ stem: 'cifar', width: 0, inputSize: 32, seed: 0 })).to.throw(/width/);
    expect(() => buildResNet18({ stem: 'vgg' as Stem, width: 2, inputSize: 32, seed: 0 })).to.throw(/stem 'vgg'/);
    expect(() => buildResNet18({ stem: 'cifar', width: 2, inputSize: 32, classes: 1, seed: 0 })).to.throw(/classes/);
  });
});

describe('fast cpu kernels', () => {
  /** Filter gradient by the definition: dW[r,c,i,o] = sum over b, y, x of in[b, y*s+r-top, x*s+c-left, i] * dy[b, y, x, o]. */
  function reference(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, s: number, top: number, left: number, cout: number): number[] {
    const [n, h, w, cin] = x.shape;
    const [, oh, ow] = dy.shape;
    const xv = x.dataSync();
    const dv = dy.dataSync();
    const out = new Array<number>(k * k * cin * cout).fill(0);
    for (let b = 0; b < n; b++)
      for (let yy = 0; yy < oh; yy++)
        for (let xx = 0; xx < ow; xx++)
          for (let r = 0; r < k; r++)
            for (let c = 0; c < k; c++) {
              const iy = yy * s + r - top;
              const ix = xx * s + c - left;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              for (let i = 0; i < cin; i++)
                for (let o = 0; o < cout; o++)
                  out[((r * k + c) * cin + i) * cout + o] +=
                    xv[((b * h + iy) * w + ix) * cin + i] * dv[((b * oh + yy) * ow + xx) * cout + o];
            }
    return out;
  }

  it('Conv2DBackpropFilter matches the definition for strides 1 and 2, same and valid padding, 1x1 to 7x7 kernels', () => {
    registerCpuKernels();
    const cases = [
      { k: 3, s: 1, pad: 'same' as const, h: 5, top: 1 },
      { k: 3, s: 2, pad: 'same' as const, h: 6, top: 0 }, // TF 'same' with stride 2 on even input pads bottom/right only
      { k: 1, s: 2, pad: 'same' as const, h: 6, top: 0 },
      { k: 7, s: 2, pad: 'same' as const, h: 9, top: 3 },
      { k: 3, s: 1, pad: 'valid' as const, h: 5, top: 0 },
    ];
    for (const c of cases) {
      const rng = new Rng(c.k * 10 + c.s);
      // ReLU-like inputs: about half exact zeros, which the kernel skips.
      const x = tf.tensor4d(
        Float32Array.from({ length: 2 * c.h * c.h * 3 }, () => Math.max(0, rng.normal())),
        [2, c.h, c.h, 3],
      );
      const probe = tf.conv2d(x, tf.zeros([c.k, c.k, 3, 4]), c.s, c.pad);
      const dy = tf.tensor4d(
        Float32Array.from({ length: probe.size }, () => rng.normal()),
        probe.shape as [number, number, number, number],
      );
      const grad = tf.grad((f: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, f as tf.Tensor4D, c.s, c.pad), dy)));
      const got = values(grad(tf.zeros([c.k, c.k, 3, 4])));
      const want = reference(x, dy, c.k, c.s, c.top, c.top, 4);
      got.forEach((v, i) => expect(v, `k${c.k} s${c.s} ${c.pad} #${i}`).to.be.closeTo(want[i], 1e-4));
    }
  });

  it('reduce over leading axes and broadcast [1, 1, 1, C] operands with numpy semantics', () => {
    registerCpuKernels();
    const rng = new Rng(9);
    const shape = [2, 3, 4, 5];
    const xv = Float32Array.from({ length: 120 }, () => rng.normal());
    const x = tf.tensor4d(xv, shape as [number, number, number, number]);
    const at = (n: number, h: number, w: number, c: number) => xv[((n * 3 + h) * 4 + w) * 5 + c];
    // Sum over N, H, W (leading axes): per-channel totals; keepDims keeps rank 4.
    const perChannel = [0, 1, 2, 3, 4].map((c) => {
      let t = 0;
      for (let n = 0; n < 2; n++) for (let h = 0; h < 3; h++) for (let w = 0; w < 4; w++) t += at(n, h, w, c);
      return t;
    });
    values(tf.sum(x, [0, 1, 2])).forEach((v, c) => expect(v).to.be.closeTo(perChannel[c], 1e-4));
    expect(tf.sum(x, [2, 0, 1], true).shape).to.deep.equal([1, 1, 1, 5]);
    values(tf.mean(x, [0, 1, 2])).forEach((v, c) => expect(v).to.be.closeTo(perChannel[c] / 24, 1e-5));
    // Sum over H, W only (not leading): the stock kernel, same definition.
    const hw = values(tf.sum(x, [1, 2]));
    expect(hw[1 * 5 + 3]).to.be.closeTo(
      Array.from({ length: 12 }, (_, i) => at(1, Math.floor(i / 4), i % 4, 3)).reduce((p, q) => p + q),
      1e-4,
    );
    // Broadcasting in both operand orders, and equal shapes with leading 1s keep their rank.
    const g = tf.tensor4d([1, 2, 3, 4, 5], [1, 1, 1, 5]);
    const prod = values(tf.mul(x, g));
    const diff = values(tf.sub(g, x));
    expect(prod[((1 * 3 + 2) * 4 + 3) * 5 + 4]).to.be.closeTo(at(1, 2, 3, 4) * 5, 1e-5);
    expect(diff[((0 * 3 + 1) * 4 + 2) * 5 + 1]).to.be.closeTo(2 - at(0, 1, 2, 1), 1e-5);
    expect(tf.add(tf.ones([1, 1, 2, 3]), tf.ones([1, 1, 2, 3])).shape).to.deep.equal([1, 1, 2, 3]);
    const q = tf.div(x, tf.fill([1, 3, 1, 5], 2));
    expect(q.shape).to.deep.equal(shape);
    expect(values(q)[7]).to.be.closeTo(xv[7] / 2, 1e-6);
  });
});

describe('model files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'model-io-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round trips a model in the tfjs format with identical predictions', async () => {
    const m = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 3 });
    // Non-trivial BatchNorm statistics, so that they are shown to be saved too.
    m.apply(tf.mul(randomImages(8, 16, 4), 3), { training: true });
    const x = randomImages(4, 16, 5);
    const before = values(m.predict(x) as tf.Tensor);
    await saveModel(m, join(dir, 'model'));
    expect((await readdir(join(dir, 'model'))).sort()).to.deep.equal(['model.json', 'weights.bin']);
    const json = JSON.parse(await readFile(join(dir, 'model', 'model.json'), 'utf8'));
    expect(json.format).to.equal('layers-model');
    expect(json.modelTopology.class_name ?? json.modelTopology.model_config?.class_name).to.be.a('string');
    expect(json.weightsManifest[0].paths).to.deep.equal(['weights.bin']);
    const bytes = json.weightsManifest[0].weights.reduce(
      (s: number, w: { shape: number[] }) => s + 4 * w.shape.reduce((a, b) => a * b, 1),
      0,
    );
    expect((await readFile(join(dir, 'model', 'weights.bin'))).length).to.equal(bytes);
    expect(bytes).to.equal(4 * m.countParams());

    const loaded = await loadModel(join(dir, 'model'));
    expect(values(loaded.predict(x) as tf.Tensor)).to.deep.equal(before);
    // Saving over an existing model replaces it and leaves no temporary folders behind.
    const other = buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, classes: 3, seed: 4 });
    await saveModel(other, join(dir, 'model'));
    expect(await readdir(dir)).to.deep.equal(['model']);
    expect(values((await loadModel(join(dir, 'model'))).predict(x) as tf.Tensor)).to.deep.equal(values(other.predict(x) as tf.Tensor));
  });

  it('names the path when a model is missing or broken', async () => {
    await expectReject(loadModel(join(dir, 'none')), /no model at .*none\/model\.json/);
    await saveModel(buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, seed: 1 }), join(dir, 'm'));
    await rm(join(dir, 'm', 'weights.bin'));
    await expectReject(loadModel(join(dir, 'm')), /weights file .*m\/weights\.bin/);
    await writeFile(join(dir, 'm', 'model.json'), '{"oops"');
    await expectReject(loadModel(join(dir, 'm')), /m\/model\.json is not valid JSON/);
  });

  it('loads a pretrained encoder only when its input and output fit', async () => {
    await saveModel(buildResNet18({ stem: 'cifar', width: 2, inputSize: 16, seed: 1 }), join(dir, 'enc'));
    const enc = await loadPretrainedEncoder(join(dir, 'enc'), 16);
    expect(enc.outputs[0].shape).to.deep.equal([null, 16]);
    await expectReject(
      loadPretrainedEncoder(join(dir, 'enc'), 32),
      /pretrained encoder .*enc: model takes input \[N, 16, 16, 3\], images are \[N, 32, 32, 3\]/,
    );
    const input = tfl.input({ shape: [16, 16, 3] });
    const conv = tfl.layers.conv2d({ filters: 2, kernelSize: 3 }).apply(input) as tfl.SymbolicTensor;
    await saveModel(tfl.model({ inputs: input, outputs: conv }), join(dir, 'conv'));
    await expectReject(loadPretrainedEncoder(join(dir, 'conv'), 16), /conv: output must be \[N, D\] features/);
    await expectReject(loadPretrainedEncoder(join(dir, 'missing'), 16), /missing\/model\.json/);
  });
});

describe('checkpoints', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ckpt-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round trip tensors, optimiser state, epoch, rng state and losses; none gives undefined', async () => {
    expect(await loadCheckpoint(dir, 'run')).to.equal(undefined);
    const weights = [
      tf.tensor2d([
        [1, 2],
        [3, 4.5],
      ]),
      tf.tensor1d([-1e-7, 3e9]),
    ];
    const slots = [tf.tensor1d([0.25]), tf.scalar(7)];
    const file = await saveCheckpoint(dir, {
      fingerprint: 'run',
      epoch: 3,
      rngState: 0xdeadbeef,
      losses: [2.5, 1.25],
      weights,
      optimizer: { kind: 'adam', step: 12, slots },
    });
    expect(file).to.equal(join(dir, CHECKPOINT_FILE));
    expect(await readdir(dir)).to.deep.equal([CHECKPOINT_FILE]);
    const c = (await loadCheckpoint(dir, 'run'))!;
    expect([c.epoch, c.rngState, c.losses, c.optimizer.kind, c.optimizer.step]).to.deep.equal([3, 0xdeadbeef, [2.5, 1.25], 'adam', 12]);
    expect(c.weights.map((t) => t.shape)).to.deep.equal([[2, 2], [2]]);
    expect(c.weights.map(values)).to.deep.equal(weights.map(values));
    expect(c.optimizer.slots.map(values)).to.deep.equal([[0.25], [7]]);
    expect(c.optimizer.slots[1].shape).to.deep.equal([]);
  });

  it('refuses a checkpoint of another run and a corrupt file, naming it', async () => {
    await saveCheckpoint(dir, {
      fingerprint: 'a',
      epoch: 1,
      rngState: 1,
      losses: [1],
      weights: [tf.ones([3])],
      optimizer: { kind: 'sgd-momentum', step: 1, slots: [tf.ones([3])] },
    });
    await expectReject(loadCheckpoint(dir, 'b'), /checkpoint\.bin: written by a different run/);
    const bytes = await readFile(join(dir, CHECKPOINT_FILE));
    await writeFile(join(dir, CHECKPOINT_FILE), bytes.subarray(0, bytes.length - 4));
    await expectReject(loadCheckpoint(dir, 'a'), /checkpoint\.bin: tensor data does not match/);
    await writeFile(join(dir, CHECKPOINT_FILE), 'hello');
    await expectReject(loadCheckpoint(dir, 'a'), /checkpoint\.bin: not a checkpoint file/);
  });
});

async function expectReject(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a rejection matching ${pattern}`).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(pattern);
}
