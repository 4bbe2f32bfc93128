import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ImageSource } from '../../data/types.js';
import type { InMemoryImages } from '../../data/dataset.js';
import { selectBackend } from '../../backend/backend.js';
import type { RetrainConfig } from '../../ml/config.js';
import { AbortError } from '../../ml/loop.js';
import { Adam, SgdMomentum } from '../../ml/optim.js';
import { learningRateAt, predict, trainClassifier } from '../../ml/train.js';
import { brightDark, cifarSubset, type Subset } from '../cifar-subset.js';

let subset: Subset;
let data: InMemoryImages; // 40 images 16x16: 20 darkened (class 0), the same 20 brightened (class 1)

before(async function () {
  this.timeout(120_000);
  await selectBackend('cpu', 'training', () => {});
  subset = await cifarSubset(2, 16);
  data = await brightDark(subset.source);
});

after(async () => {
  await subset?.cleanup();
});

const values = (t: tf.Tensor) => Array.from(t.dataSync());

describe('optimisers', () => {
  it('SGD with momentum and coupled weight decay matches a hand computation', () => {
    // w0 = [1, -2], constant grad .5, lr .1, momentum .9, weight decay .01:
    // step 1: g = .5 + .01 w0 = [.51, .48]; buf = g; w1 = w0 - .1 buf = [.949, -2.048]
    // step 2: g = [.50949, .47952]; buf = .9 [.51, .48] + g = [.96849, .91152]; w2 = [.852151, -2.139152]
    const w = tf.variable(tf.tensor1d([1, -2]));
    const opt = new SgdMomentum([w], 0.1, 0.9, 0.01);
    const g = tf.tensor1d([0.5, 0.5]);
    opt.step([g]);
    values(w).forEach((v, i) => expect(v).to.be.closeTo([0.949, -2.048][i], 1e-6));
    opt.step([g]);
    values(w).forEach((v, i) => expect(v).to.be.closeTo([0.852151, -2.139152][i], 1e-6));
  });

  it('Adam with betas (.9, .99) matches a hand computation, and its state restores exactly', () => {
    // w0 = 1, lr .1. Step 1, g = .5: m = .05, v = .0025, m^ = .5, v^ = .25, w1 = 1 - .1 * .5/.5 = .9.
    // Step 2, g = -.25: m = .045 - .025 = .02, v = .002475 + .000625 = .0031,
    // m^ = .02/.19, v^ = .0031/.0199, w2 = .9 - .1 * m^/sqrt(v^) = .87333006.
    const w = tf.variable(tf.scalar(1));
    const opt = new Adam([w], 0.1, 0.9, 0.99);
    opt.step([tf.scalar(0.5)]);
    expect(w.dataSync()[0]).to.be.closeTo(0.9, 1e-6);
    const twin = tf.variable(w.clone());
    const copy = new Adam([twin], 0.1, 0.9, 0.99);
    copy.load({ ...opt.state(), slots: opt.state().slots.map((t) => t.clone()) });
    opt.step([tf.scalar(-0.25)]);
    copy.step([tf.scalar(-0.25)]);
    expect(w.dataSync()[0]).to.be.closeTo(0.87333006, 1e-6);
    expect(twin.dataSync()[0]).to.equal(w.dataSync()[0]);
    expect(() => copy.load({ kind: 'sgd-momentum', step: 1, slots: [tf.scalar(0)] })).to.throw(/'sgd-momentum', not 'adam'/);
  });
});

describe('learningRateAt', () => {
  it('divides the rate by 10 at each milestone, like PyTorch MultiStepLR', () => {
    const cfg = { lr: 0.1, milestones: [100, 150] };
    expect([0, 99, 100, 149, 150, 199].map((e) => learningRateAt(cfg, e))).to.deep.equal([0.1, 0.1, 0.01, 0.01, 0.001, 0.001]);
    expect(learningRateAt({ lr: 0.1, milestones: [] }, 500)).to.equal(0.1);
  });
});

describe('trainClassifier and predict', () => {
  const cfg: RetrainConfig = { width: 4, epochs: 6, batchSize: 8, lr: 0.02, momentum: 0.9, weightDecay: 5e-4, milestones: [4, 5] };
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'train-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Records which samples a run reads. */
  const recording = (source: ImageSource, seen: Set<number>): ImageSource =>
    Object.assign(Object.create(source) as ImageSource, {
      readImages: (indices: ArrayLike<number>) => {
        Array.from(indices).forEach((i) => seen.add(i));
        return source.readImages(indices);
      },
    });

  it('learns bright vs dark, never reads dropped samples, and follows the lr schedule', async () => {
    const labels = Int32Array.from(data.labels);
    const dropped = [0, 7, 13, 20, 27, 33];
    dropped.forEach((i) => (labels[i] = -1));
    const seen = new Set<number>();
    const lrs: (number | undefined)[] = [];
    const { model, losses } = await trainClassifier(recording(data, seen), labels, cfg, {
      seed: 1,
      stem: 'cifar',
      inputSize: 16,
      hooks: { onEpoch: (p) => void lrs.push(p.lr) },
    });
    expect(dropped.filter((i) => seen.has(i))).to.deep.equal([]);
    expect(seen.size).to.equal(40 - dropped.length);
    expect(lrs).to.deep.equal([0.02, 0.02, 0.02, 0.02, 0.002, 0.0002]);
    expect(losses).to.have.length(6);
    expect(Math.min(...losses.slice(3))).to.be.lessThan(0.1 * losses[0]);
    const pred = await predict(model, data, { batchSize: 16 });
    const correct = (idx: number[]) => idx.filter((i) => pred[i] === data.labels[i]).length;
    const kept = Array.from({ length: 40 }, (_, i) => i).filter((i) => !dropped.includes(i));
    expect(correct(kept)).to.equal(kept.length);
    // The dropped samples were never seen, and are classified by brightness all the same.
    expect(correct(dropped)).to.equal(dropped.length);
    model.dispose();
  });

  it('resumes after an abort to the same weights as an uninterrupted run', async () => {
    const small = { ...cfg, width: 2, epochs: 2, milestones: [1] };
    const o = { seed: 3, stem: 'cifar' as const, inputSize: 16 };
    const straight = await trainClassifier(data, data.labels, small, { ...o, hooks: { checkpointDir: join(dir, 'a') } });
    const controller = new AbortController();
    let err: unknown;
    try {
      await trainClassifier(data, data.labels, small, {
        ...o,
        hooks: { checkpointDir: join(dir, 'b'), signal: controller.signal, onEpoch: () => controller.abort() },
      });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(AbortError);
    const lrs: (number | undefined)[] = [];
    const resumed = await trainClassifier(data, data.labels, small, {
      ...o,
      hooks: { checkpointDir: join(dir, 'b'), onEpoch: (p) => void lrs.push(p.lr) },
    });
    expect(resumed.resumedFromEpoch).to.equal(1);
    expect(lrs).to.deep.equal([0.002]); // the schedule continues at the resumed epoch
    expect(resumed.losses).to.deep.equal(straight.losses);
    straight.model.getWeights().forEach((w, i) => expect(values(resumed.model.getWeights()[i])).to.deep.equal(values(w)));
    // Other labels are another run: the checkpoint is refused rather than resumed.
    const flipped = Int32Array.from(data.labels, (y) => 1 - y);
    let refused: unknown;
    try {
      await trainClassifier(data, flipped, small, { ...o, hooks: { checkpointDir: join(dir, 'b') } });
    } catch (e) {
      refused = e;
    }
    expect(String(refused)).to.match(/different run/);
    straight.model.dispose();
    resumed.model.dispose();
  });

  it('rejects labels that do not fit the dataset', async () => {
    const o = { seed: 1, stem: 'cifar' as const, inputSize: 16 };
    const reject = async (labels: Int32Array, pattern: RegExp, inputSize = 16) => {
      let err: unknown;
      try {
        await trainClassifier(data, labels, cfg, { ...o, inputSize });
      } catch (e) {
        err = e;
      }
      expect(String(err)).to.match(pattern);
    };
    await reject(new Int32Array(3), /3 labels for 40 samples/);
    await reject(
      Int32Array.from(data.labels, (y, i) => (i === 5 ? 2 : y)),
      /label 2 of sample 5 is outside -1..1/,
    );
    await reject(new Int32Array(40).fill(-1), /every sample is dropped/);
    await reject(data.labels, /images are 16x16, inputSize is 32/, 32);
  });
});
