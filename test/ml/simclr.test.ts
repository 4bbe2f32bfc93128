import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import {
  applyAugmentation,
  sampleCrop,
  sampleSimclrParams,
  simclrAugment,
  toFloatImages,
  trainAugment,
  type AugmentParams,
  type Jitter,
} from '../../ml/augment.js';
import { selectBackend } from '../../backend/backend.js';
import type { ImageSource } from '../../data/types.js';
import type { SimclrEncoderConfig } from '../../ml/config.js';
import { encodeSamples, extractFeatures, inferBatches, mirrorImages } from '../../ml/features.js';
import { matrix, standardizeColumns } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { AbortError, ntXentLoss, trainSimclr, type TrainProgress } from '../../ml/simclr.js';
import { cifarSubset, type Subset } from '../cifar-subset.js';

const SIZE = 16;
let subset: Subset;
let images: tf.Tensor4D; // the first 6 subset images as floats

before(async function () {
  this.timeout(120_000);
  await selectBackend('cpu', 'training', () => {});
  subset = await cifarSubset(2, SIZE); // 20 real images, 2 per class
  const idx = [0, 1, 2, 3, 4, 5];
  images = toFloatImages(await subset.source.readImages(idx), idx.length, SIZE, SIZE);
});

after(async () => {
  images?.dispose();
  await subset?.cleanup();
});

const values = (t: tf.Tensor) => Array.from(t.dataSync());

describe('ntXentLoss', () => {
  it('matches a hand-computed batch of two pairs', () => {
    // Views (after L2 normalisation): a = (1,0), b = (0,1); a' = (3,4)/5 = (.6,.8), b' = (0,2)/2 = (0,1).
    // Cosines: a.b = 0, a.a' = .6, a.b' = 0, b.a' = .8, b.b' = 1, a'.b' = .8. With temperature 1,
    // loss(anchor) = log(sum of exp(cos) over the 3 others) - cos(anchor, its positive):
    //   a : log(e^0 + e^.6 + e^0)   - .6 = log(3.822119) - .6 = 0.740805
    //   b : log(e^0 + e^.8 + e^1)   - 1  = log(5.942164) - 1  = 0.782352
    //   a': log(e^.6 + e^.8 + e^.8) - .6 = log(6.272020) - .6 = 1.236287
    //   b': log(e^0 + e^1 + e^.8)   - 1  = 0.782352
    // mean = 0.885449. With temperature .5 every cosine doubles: mean = 0.758885.
    const z1 = tf.tensor2d([
      [1, 0],
      [0, 1],
    ]);
    const z2 = tf.tensor2d([
      [3, 4],
      [0, 2],
    ]);
    expect(ntXentLoss(z1, z2, 1).dataSync()[0]).to.be.closeTo(0.8854492, 1e-5);
    expect(ntXentLoss(z1, z2, 0.5).dataSync()[0]).to.be.closeTo(0.7588852, 1e-5);
    tf.dispose([z1, z2]);
  });

  it('is symmetric in the views, invariant to reordering pairs and to scaling embeddings', () => {
    const rng = new Rng(3);
    const z1 = tf.tensor2d(
      Array.from({ length: 6 * 5 }, () => rng.normal()),
      [6, 5],
    );
    const z2 = tf.tensor2d(
      Array.from({ length: 6 * 5 }, () => rng.normal()),
      [6, 5],
    );
    const base = ntXentLoss(z1, z2, 0.5).dataSync()[0];
    expect(ntXentLoss(z2, z1, 0.5).dataSync()[0]).to.be.closeTo(base, 1e-5);
    const perm = tf.tensor1d([4, 2, 0, 5, 1, 3], 'int32');
    expect(ntXentLoss(tf.gather(z1, perm), tf.gather(z2, perm), 0.5).dataSync()[0]).to.be.closeTo(base, 1e-5);
    expect(ntXentLoss(tf.mul(z1, 7), tf.mul(z2, 0.1), 0.5).dataSync()[0]).to.be.closeTo(base, 1e-5);
    // Pairing view i with view j != i is a different problem: the loss must change.
    expect(Math.abs(ntXentLoss(z1, tf.gather(z2, perm), 0.5).dataSync()[0] - base)).to.be.greaterThan(1e-3);
  });

  it('is lower for identical views than for unrelated ones, and near its minimum for orthogonal pairs', () => {
    const rng = new Rng(5);
    const z1 = tf.tensor2d(
      Array.from({ length: 8 * 16 }, () => rng.normal()),
      [8, 16],
    );
    const z2 = tf.tensor2d(
      Array.from({ length: 8 * 16 }, () => rng.normal()),
      [8, 16],
    );
    const same = ntXentLoss(z1, z1, 0.5).dataSync()[0];
    const random = ntXentLoss(z1, z2, 0.5).dataSync()[0];
    expect(same).to.be.lessThan(random);
    // Pairs on mutually orthogonal axes: positive cosine 1, negatives 0.
    // loss = log(e^2 + 2(n-1) e^0) - 2 with temperature .5 and n = 4 pairs.
    const eye = tf.eye(4, 16) as tf.Tensor2D;
    expect(ntXentLoss(eye, eye, 0.5).dataSync()[0]).to.be.closeTo(Math.log(Math.exp(2) + 6) - 2, 1e-5);
  });

  it('rejects views of different shapes', () => {
    expect(() => ntXentLoss(tf.zeros([2, 3]), tf.zeros([3, 3]), 0.5)).to.throw(/shapes/);
  });
});

describe('augmentation', () => {
  const plain = (n: number, crop = { top: 0, left: 0, height: SIZE, width: SIZE }): AugmentParams => ({
    crops: Array.from({ length: n }, () => crop),
    flips: Array.from({ length: n }, () => false),
    jitters: Array.from({ length: n }, () => undefined),
    grays: Array.from({ length: n }, () => false),
  });

  it('toFloatImages scales bytes to [0, 1] and checks the byte count', () => {
    const t = toFloatImages(Uint8Array.from([0, 51, 255]), 1, 1, 1);
    expect(values(t)).to.deep.equal([0, 0.2, 1].map(Math.fround));
    expect(() => toFloatImages(new Uint8Array(5), 1, 1, 1)).to.throw(/5 bytes/);
  });

  it('keeps shape and [0, 1] range, is deterministic for an rng state and differs across seeds', () => {
    for (const f of [simclrAugment, trainAugment]) {
      const a = f(images, new Rng(11));
      const b = f(images, new Rng(11));
      const c = f(images, new Rng(12));
      expect(a.shape).to.deep.equal(images.shape);
      expect(tf.min(a).dataSync()[0]).to.be.at.least(0);
      expect(tf.max(a).dataSync()[0]).to.be.at.most(1);
      expect(values(a)).to.deep.equal(values(b));
      expect(tf.max(tf.abs(tf.sub(a, c))).dataSync()[0]).to.be.greaterThan(0.05);
      tf.dispose([a, b, c]);
    }
  });

  it('identity parameters return the images exactly; a flip is a real mirror image', () => {
    const id = applyAugmentation(images, plain(6));
    expect(values(id)).to.deep.equal(values(images));
    const p = plain(6);
    p.flips = p.flips.map(() => true);
    const flipped = applyAugmentation(images, p);
    expect(values(flipped)).to.deep.equal(values(tf.reverse(images, 2)));
  });

  it('crops the requested pixels and resizes them to the full size', () => {
    // Top-left 8x8 quadrant stretched to 16x16: output corners are the quadrant's corners.
    const out = applyAugmentation(images, plain(6, { top: 0, left: 0, height: 8, width: 8 }));
    const px = (t: tf.Tensor4D, y: number, x: number) => values(tf.slice(t, [0, y, x, 0], [6, 1, 1, 3]));
    const close = (a: number[], b: number[]) => a.forEach((v, i) => expect(v).to.be.closeTo(b[i], 1e-4));
    close(px(out, 0, 0), px(images, 0, 0));
    close(px(out, 15, 15), px(images, 7, 7));
    close(px(out, 0, 15), px(images, 0, 7));
    // Bottom-right quadrant, flipped: output (0, 0) is the quadrant's top-right pixel.
    const p = plain(6, { top: 8, left: 8, height: 8, width: 8 });
    p.flips = p.flips.map(() => true);
    const fl = applyAugmentation(images, p);
    close(px(fl, 0, 0), px(images, 8, 15));
    close(px(fl, 15, 15), px(images, 15, 8));
  });

  it('colour jitter: neutral factors change nothing, saturation 0 and grayscale give grey, hue keeps luma', () => {
    const withJitter = (j: Jitter) => ({ ...plain(6), jitters: Array.from({ length: 6 }, () => j) });
    const neutral = applyAugmentation(images, withJitter({ brightness: 1, contrast: 1, saturation: 1, hue: 0 }));
    expect(tf.max(tf.abs(tf.sub(neutral, images))).dataSync()[0]).to.be.lessThan(1e-5);
    const isGrey = (t: tf.Tensor4D) => {
      const [r, g, b] = tf.split(t, 3, 3);
      expect(tf.max(tf.abs(tf.sub(r, g))).dataSync()[0]).to.be.lessThan(1e-5);
      expect(tf.max(tf.abs(tf.sub(g, b))).dataSync()[0]).to.be.lessThan(1e-5);
    };
    isGrey(applyAugmentation(images, withJitter({ brightness: 1, contrast: 1, saturation: 0, hue: 0 })));
    isGrey(applyAugmentation(images, { ...plain(6), grays: Array.from({ length: 6 }, () => true) }));
    // Darker/brighter: brightness 0.5 halves every value.
    const dim = applyAugmentation(images, withJitter({ brightness: 0.5, contrast: 1, saturation: 1, hue: 0 }));
    expect(tf.max(tf.abs(tf.sub(dim, tf.mul(images, 0.5)))).dataSync()[0]).to.be.lessThan(1e-5);
    // A hue rotation moves colours but not luma (on low-chroma pixels that are not clipped).
    const soft = tf.add(tf.mul(images, 0.2), 0.4) as tf.Tensor4D;
    const rotated = applyAugmentation(soft, withJitter({ brightness: 1, contrast: 1, saturation: 1, hue: 0.25 }));
    const luma = (t: tf.Tensor4D) => tf.sum(tf.mul(t, tf.tensor1d([0.299, 0.587, 0.114])), -1);
    expect(tf.max(tf.abs(tf.sub(luma(rotated), luma(soft)))).dataSync()[0]).to.be.lessThan(1e-4);
    expect(tf.max(tf.abs(tf.sub(rotated, soft))).dataSync()[0]).to.be.greaterThan(0.01);
  });

  it('samples crops inside the image with the configured area and aspect ranges, and SimCLR probabilities', () => {
    const rng = new Rng(1);
    for (let i = 0; i < 2000; i++) {
      const c = sampleCrop(rng, 32, 32);
      expect(c.top).to.be.at.least(0);
      expect(c.left).to.be.at.least(0);
      expect(c.top + c.height).to.be.at.most(32);
      expect(c.left + c.width).to.be.at.most(32);
      // Rounding to whole pixels widens the nominal ranges slightly on a 32-pixel image.
      expect((c.height * c.width) / 1024).to.be.within(0.06, 1);
      expect(c.width / c.height).to.be.within(0.6, 1.6);
    }
    const p = sampleSimclrParams(new Rng(2), 4000, 32, 32);
    const rate = (xs: boolean[]) => xs.filter(Boolean).length / xs.length;
    expect(rate(p.flips)).to.be.closeTo(0.5, 0.03);
    expect(rate(p.jitters.map((j) => j !== undefined))).to.be.closeTo(0.8, 0.03);
    expect(rate(p.grays)).to.be.closeTo(0.2, 0.03);
  });
});

describe('trainSimclr and extractFeatures', () => {
  const cfg: SimclrEncoderConfig = {
    kind: 'simclr',
    width: 4,
    stem: 'cifar',
    epochs: 2,
    batchSize: 10,
    lr: 3e-3,
    temperature: 0.5,
    projectionDim: 16,
  };
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'simclr-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lowers the NT-Xent loss over a few epochs without leaking tensors', async () => {
    // Training losses are noisy (fresh random views every batch), so the encoder is also judged
    // on fixed views: NT-Xent of its features, inference mode, before and after training.
    const x = toFloatImages(await subset.source.readImages(Int32Array.from({ length: 20 }, (_, i) => i)), 20, SIZE, SIZE);
    const rng = new Rng(99);
    const views = Array.from({ length: 4 }, () => [simclrAugment(x, rng), simclrAugment(x, rng)]);
    const fixedViewLoss = (encoder: tfl.LayersModel) =>
      views.reduce(
        (s, [a, b]) =>
          s + tf.tidy(() => ntXentLoss(encoder.predict(a) as tf.Tensor2D, encoder.predict(b) as tf.Tensor2D, 0.5).dataSync()[0]),
        0,
      ) / views.length;

    const initial = await trainSimclr(subset.source, { ...cfg, epochs: 0 }, 1);
    expect(initial.losses).to.deep.equal([]);
    const before = fixedViewLoss(initial.encoder);
    const counts: number[] = [];
    const { encoder, losses } = await trainSimclr(subset.source, { ...cfg, epochs: 6 }, 1, {
      onEpoch: () => {
        counts.push(tf.memory().numTensors);
      },
    });
    const after = fixedViewLoss(encoder);
    expect(losses).to.have.length(6);
    // Chance level for 10 pairs: log(19) = 2.94. Measured (cpu): 2.88 ... 2.81; fixed views 3.65 -> 3.54.
    expect(losses[0]).to.be.closeTo(Math.log(19), 0.3);
    expect(losses[5]).to.be.lessThan(losses[0]);
    expect(after).to.be.lessThan(before - 0.05);
    expect(new Set(counts).size, `tensor counts per epoch: ${counts}`).to.equal(1);
    tf.dispose([x, ...views.flat()]);
    initial.encoder.dispose();
    encoder.dispose();
  });

  it('resumes from a checkpoint after an abort and ends with the same weights as an uninterrupted run', async () => {
    const straight = await trainSimclr(subset.source, cfg, 4, { checkpointDir: join(dir, 'a') });

    const controller = new AbortController();
    const epochsSeen: TrainProgress[] = [];
    let err: unknown;
    try {
      await trainSimclr(subset.source, cfg, 4, {
        checkpointDir: join(dir, 'b'),
        signal: controller.signal,
        onEpoch: (p) => {
          epochsSeen.push(p);
          controller.abort(); // "crash" right after the first epoch's checkpoint
        },
      });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(AbortError);
    expect(epochsSeen.map((p) => p.epoch)).to.deep.equal([1]);
    expect(epochsSeen[0].checkpoint).to.match(/checkpoint\.bin$/);

    const resumed = await trainSimclr(subset.source, cfg, 4, { checkpointDir: join(dir, 'b') });
    expect(resumed.resumedFromEpoch).to.equal(1);
    expect(resumed.losses).to.deep.equal(straight.losses);
    const a = straight.encoder.getWeights();
    const b = resumed.encoder.getWeights();
    expect(b.length).to.equal(a.length);
    a.forEach((w, i) => expect(values(b[i]), straight.encoder.weights[i].name).to.deep.equal(values(w)));

    // A finished run found in its folder is not trained again.
    const again = await trainSimclr(subset.source, cfg, 4, { checkpointDir: join(dir, 'b') });
    expect(again.resumedFromEpoch).to.equal(2);
    expect(values(again.encoder.getWeights()[0])).to.deep.equal(values(a[0]));
    // A different run refuses the folder instead of resuming someone else's weights.
    let refused: unknown;
    try {
      await trainSimclr(subset.source, cfg, 5, { checkpointDir: join(dir, 'b') });
    } catch (e) {
      refused = e;
    }
    expect(String(refused)).to.match(/checkpoint\.bin.*different run/);
    [straight, resumed, again].forEach((r) => r.encoder.dispose());
  });

  it('stops at the next batch when aborted', async () => {
    const controller = new AbortController();
    const batches: number[] = [];
    let err: unknown;
    try {
      await trainSimclr(subset.source, cfg, 1, {
        signal: controller.signal,
        onBatch: (done) => {
          batches.push(done);
          controller.abort();
        },
      });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(AbortError);
    expect((err as Error).message).to.match(/epoch 1 batch 2\/2/);
    expect(batches).to.deep.equal([1]);
  });

  it('extracts inference-mode features of shape [N, 8w], independent of batch size', async () => {
    const { encoder } = await trainSimclr(subset.source, { ...cfg, epochs: 1 }, 2);
    const before = tf.memory().numTensors;
    const progress: number[] = [];
    const f7 = await extractFeatures(encoder, subset.source, {
      batchSize: 7,
      onBatch: (d, t) => {
        progress.push(d / t);
      },
    });
    const f30 = await extractFeatures(encoder, subset.source, { batchSize: 20 });
    expect(tf.memory().numTensors).to.equal(before);
    expect([f7.rows, f7.cols]).to.deep.equal([20, 32]);
    expect(progress).to.have.length(3);
    expect(progress[2]).to.equal(1);
    f7.data.forEach((v, i) => expect(v).to.be.closeTo(f30.data[i], 1e-4));
    // Row i is sample i: the raw rows match a direct forward pass on samples 0..5, and the
    // features are those rows standardised over the dataset.
    const raw = matrix(20, 32);
    await inferBatches(encoder, subset.source, { batchSize: 7 }, 'test', (start, rows) => raw.data.set(rows, start * 32));
    const direct = (encoder.predict(images) as tf.Tensor).dataSync();
    direct.forEach((v, i) => expect(raw.data[i]).to.be.closeTo(v, 1e-4));
    standardizeColumns(raw).data.forEach((v, i) => expect(f7.data[i]).to.be.closeTo(v, 1e-4));
    for (let j = 0; j < 32; j++) {
      const col = Array.from({ length: 20 }, (_, i) => f7.data[i * 32 + j]);
      expect(col.reduce((a, b) => a + b, 0) / 20).to.be.closeTo(0, 1e-4);
    }
    // Trained features are not constant across samples.
    expect(Math.abs(f7.data[0] - f7.data[32])).to.be.greaterThan(0);
    encoder.dispose();
  });

  it('flipAverage: each row is the mean over the image and its mirror, so a mirrored dataset has the same rows', async () => {
    const { encoder } = await trainSimclr(subset.source, { ...cfg, epochs: 1 }, 3);
    const src = subset.source;
    const mirrored: ImageSource = {
      ...src,
      readImages: async (idx) => mirrorImages(await src.readImages(idx), idx.length, src.height, src.width),
    };
    const before = tf.memory().numTensors;
    const plain = await encodeSamples(encoder, src, { batchSize: 7 });
    const ofMirror = await encodeSamples(encoder, mirrored, { batchSize: 7 });
    const averaged = await encodeSamples(encoder, src, { batchSize: 7, flipAverage: true });
    const averagedOfMirror = await encodeSamples(encoder, mirrored, { batchSize: 20, flipAverage: true });
    expect(tf.memory().numTensors).to.equal(before);
    averaged.data.forEach((v, i) => expect(v).to.be.closeTo((plain.data[i] + ofMirror.data[i]) / 2, 1e-4));
    averagedOfMirror.data.forEach((v, i) => expect(v).to.be.closeTo(averaged.data[i], 1e-4));
    // The encoder is not mirror-invariant, or the average would be the plain rows and prove nothing.
    expect(plain.data.some((v, i) => Math.abs(v - ofMirror.data[i]) > 1e-3)).to.equal(true);
    encoder.dispose();
  });

  it('mirrorImages reverses each row of pixels, keeping the channels of each pixel in order', () => {
    // Two 2x3 images; pixel (image n, row y, column x) has channels [100n + 10y + x, +1, +2].
    const pixels = Uint8Array.from({ length: 2 * 2 * 3 * 3 }, (_, i) => {
      const [n, y, x, c] = [Math.floor(i / 18), Math.floor(i / 9) % 2, Math.floor(i / 3) % 3, i % 3];
      return 100 * n + 10 * y + x + c;
    });
    const out = mirrorImages(pixels, 2, 2, 3);
    for (let n = 0; n < 2; n++)
      for (let y = 0; y < 2; y++)
        for (let x = 0; x < 3; x++)
          for (let c = 0; c < 3; c++) expect(out[((n * 2 + y) * 3 + x) * 3 + c]).to.equal(100 * n + 10 * y + (2 - x) + c);
    expect(mirrorImages(out, 2, 2, 3)).to.deep.equal(pixels);
  });
});
