import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createAttack, poisonDataset } from '../../attacks/index.js';
import { createIssba, type IssbaAttack } from '../../attacks/issba.js';
import type { IssbaConfig } from '../../attacks/types.js';
import { selectBackend } from '../../backend/backend.js';
import { InMemoryImages } from '../../data/dataset.js';
import { Rng } from '../../ml/random.js';
import { cifarSubset, type Subset } from '../cifar-subset.js';

const S = 32;
const PX = S * S * 3;
const BITS = 20;

/** Samples `from`..`to` - 1 of a set, in memory. */
async function slice(src: Subset['source'], from: number, to: number): Promise<InMemoryImages> {
  const idx = Array.from({ length: to - from }, (_, k) => from + k);
  return new InMemoryImages({
    classes: src.classes,
    height: S,
    width: S,
    labels: Int32Array.from(idx, (i) => src.labels[i]),
    ids: idx.map((i) => src.ids[i]),
    pixels: (await src.readImages(idx)).slice(),
  });
}

function bitAccuracy(probs: Float32Array, n: number, secret: Uint8Array): number {
  let right = 0;
  for (let i = 0; i < n; i++) for (let b = 0; b < BITS; b++) right += (probs[i * BITS + b] > 0.5 ? 1 : 0) === secret[b] ? 1 : 0;
  return right / (n * BITS);
}

describe('attacks: ISSBA', function () {
  let subset: Subset;
  let train: InMemoryImages;
  let heldOut: InMemoryImages;
  let previousBackend: string | undefined;
  let attack: IssbaAttack;
  // The smallest setting that learns the bits reliably here: 250 steps at width 16 (~20 s).
  const cfg: IssbaConfig = { name: 'issba', targetClass: 0, rate: 0.1, seed: 3, trainSteps: 250, width: 16 };

  before(async function () {
    previousBackend = tf.getBackend();
    await selectBackend('auto', 'training', () => {});
    subset = await cifarSubset(10, S);
    // cifarSubset orders by class: every 5th image is held out, the rest trains the encoder.
    const all = await slice(subset.source, 0, subset.source.size);
    const pick = (keep: (i: number) => boolean) => {
      const idx = Array.from({ length: all.size }, (_, i) => i).filter(keep);
      return idx;
    };
    const trainIdx = pick((i) => i % 5 !== 0);
    const heldIdx = pick((i) => i % 5 === 0);
    const subsetOf = async (idx: number[]) =>
      new InMemoryImages({
        classes: all.classes,
        height: S,
        width: S,
        labels: Int32Array.from(idx, (i) => all.labels[i]),
        ids: idx.map((i) => all.ids[i]),
        pixels: (await all.readImages(idx)).slice(),
      });
    train = await subsetOf(trainIdx);
    heldOut = await subsetOf(heldIdx);
    attack = await createIssba(cfg, S, { clean: train }, new Rng(11));
  });

  after(async function () {
    attack?.dispose?.();
    await subset?.cleanup();
    if (previousBackend) await tf.setBackend(previousBackend);
  });

  it('the decoder recovers the secret from encoded held-out images, not from clean ones', async function () {
    const n = heldOut.size;
    const clean = await heldOut.readImages(Array.from({ length: n }, (_, i) => i));
    const encoded = new Uint8Array(clean.length);
    for (let i = 0; i < n; i++) encoded.set(attack.applyTest(clean.subarray(i * PX, (i + 1) * PX), S, S, new Rng(0)), i * PX);
    expect(attack.secret).to.have.length(BITS);
    expect(bitAccuracy(attack.decode!(encoded, n), n, attack.secret)).to.be.greaterThan(0.9);
    expect(bitAccuracy(attack.decode!(clean, n), n, attack.secret)).to.be.lessThan(0.8);
  });

  it('the residual stays within eps = 8/255, is visible in the bytes, and differs from image to image', async function () {
    const imgs = await heldOut.readImages([0, 1]);
    const residuals = [0, 1].map((j) => {
      const img = imgs.subarray(j * PX, (j + 1) * PX);
      const out = attack.applyTrain(img, S, S, j, new Rng(0));
      return Int16Array.from(out, (v, k) => v - img[k]);
    });
    for (const r of residuals) {
      const max = r.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const rms = Math.sqrt(r.reduce((s, v) => s + v * v, 0) / r.length);
      expect(max).to.be.at.most(8);
      expect(rms).to.be.greaterThan(1);
    }
    // Sample-specific: the two residuals are not one pattern.
    let differ = 0;
    for (let k = 0; k < PX; k++) if (residuals[0][k] !== residuals[1][k]) differ++;
    expect(differ).to.be.greaterThan(PX / 4);
  });

  it('a saved encoder gives the same bytes; another seed or no model at all is refused clearly', async function () {
    const dir = await mkdtemp(join(tmpdir(), 'issba-test-'));
    try {
      await attack.save!(dir);
      const again = await createIssba(cfg, S, { modelDir: dir }, new Rng(11));
      const img = await heldOut.readImages([3]);
      expect(Buffer.compare(again.applyTest(img, S, S, new Rng(0)), attack.applyTest(img, S, S, new Rng(0)))).to.equal(0);
      expect(again.decode).to.equal(undefined);
      again.dispose?.();
      // Another seed draws another secret: the saved encoder is not for it.
      await createIssba(cfg, S, { modelDir: dir }, new Rng(12)).then(
        () => expect.fail('should throw'),
        (err: Error) => expect(err.message).to.match(/made for another configuration or seed/),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await createAttack(cfg, S).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/trained on the clean training set/),
    );
  });

  it('through poisonDataset: same seed, same ids and bytes (small encoder)', async function () {
    const small: IssbaConfig = { ...cfg, trainSteps: 10, width: 4 };
    const a = await poisonDataset(train, small);
    const b = await poisonDataset(train, small);
    expect(a.truth.poisoned).to.have.length(8);
    expect(a.truth).to.deep.equal(b.truth);
    for (const i of a.truth.poisoned) expect(a.poisoned.labels[i]).to.equal(0);
    const got = await a.poisoned.readImages(a.truth.poisoned);
    expect(Buffer.compare(got, await b.poisoned.readImages(a.truth.poisoned))).to.equal(0);
    expect(Buffer.compare(got, await train.readImages(a.truth.poisoned))).to.not.equal(0);
    a.attack.dispose?.();
    b.attack.dispose?.();
  });
});
