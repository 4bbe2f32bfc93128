import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { createAttack, poisonDataset, triggeredTestSet } from '../../attacks/index.js';
import { pgdLinf } from '../../attacks/lc.js';
import { loadTrigger, type Trigger } from '../../attacks/triggers.js';
import { selectBackend } from '../../backend/backend.js';
import type { LcConfig } from '../../attacks/types.js';
import { toFloatImages } from '../../ml/augment.js';
import { Rng } from '../../ml/random.js';
import { buildResNet18 } from '../../ml/resnet.js';
import { cifarSubset, type Subset } from '../cifar-subset.js';

const S = 32;
const PX = S * S * 3;

describe('attacks: LC (label-consistent)', function () {
  let subset: Subset;
  let previousBackend: string | undefined;
  let trigger: Trigger;
  // Tiny surrogate and PGD; stepSize 4/255 x 5 steps reaches the 16/255 bound, so clipping shows.
  const cfg: LcConfig = { name: 'lc', targetClass: 0, rate: 0.05, seed: 7, surrogateWidth: 4, surrogateEpochs: 1, steps: 5, stepSize: 4 };

  before(async function () {
    previousBackend = tf.getBackend();
    await selectBackend('auto', 'training', () => {});
    subset = await cifarSubset(10, S);
    trigger = await loadTrigger('badnet_patch4_32.png');
  });

  after(async function () {
    await subset?.cleanup();
    if (previousBackend) await tf.setBackend(previousBackend);
  });

  it('PGD raises the loss of the true label and stays within eps (L-inf, 8-bit)', async function () {
    const model = buildResNet18({ stem: 'cifar', width: 4, inputSize: S, classes: 10, seed: 1 });
    try {
      const idx = [0, 1, 2, 3];
      const pixels = await subset.source.readImages(idx);
      const labels = Int32Array.from(idx, (i) => subset.source.labels[i]);
      const adv = pgdLinf(model, pixels, 4, S, labels, 10, { eps: 8 / 255, stepSize: 2 / 255, steps: 6 });
      const loss = (p: Uint8Array) =>
        tf.tidy(
          () =>
            tf.losses
              .softmaxCrossEntropy(tf.oneHot(tf.tensor1d(labels, 'int32'), 10), model.predict(toFloatImages(p, 4, S, S)) as tf.Tensor2D)
              .dataSync()[0],
        );
      expect(loss(adv)).to.be.greaterThan(loss(pixels));
      let maxDiff = 0;
      for (let i = 0; i < adv.length; i++) maxDiff = Math.max(maxDiff, Math.abs(adv[i] - pixels[i]));
      expect(maxDiff).to.equal(8);
    } finally {
      model.dispose();
    }
  });

  it('poisons target-class images only, keeps every label, perturbs within eps and stamps the 4-corner trigger', async function () {
    const clean = subset.source;
    const { poisoned, truth, attack } = await poisonDataset(clean, cfg);
    expect(truth.poisoned).to.have.length(5); // round(0.05 * 100)
    expect(truth.cover).to.equal(undefined);
    expect(truth.sourceLabels).to.deep.equal([0, 0, 0, 0, 0]);
    for (const i of truth.poisoned) expect(clean.labels[i]).to.equal(0);
    expect(Array.from(poisoned.labels)).to.deep.equal(Array.from(clean.labels));
    const before = await clean.readImages(truth.poisoned);
    const after = await poisoned.readImages(truth.poisoned);
    let maxDiff = 0;
    let moved = 0;
    for (let j = 0; j < truth.poisoned.length; j++) {
      for (let p = 0; p < S * S; p++) {
        for (let c = 0; c < 3; c++) {
          const k = j * PX + p * 3 + c;
          if (trigger.mask[p]) {
            expect(after[k]).to.equal(trigger.pattern[p * 3 + c]);
          } else {
            maxDiff = Math.max(maxDiff, Math.abs(after[k] - before[k]));
            if (after[k] !== before[k]) moved++;
          }
        }
      }
    }
    expect(maxDiff).to.equal(16);
    expect(moved).to.be.greaterThan(0.5 * truth.poisoned.length * (PX - 36 * 3));
    // Other samples are untouched.
    const others = Array.from({ length: clean.size }, (_, i) => i).filter((i) => !truth.poisoned.includes(i));
    expect(Buffer.compare(await poisoned.readImages(others), await clean.readImages(others))).to.equal(0);
    attack.dispose?.();
  });

  it('same seed, same poisoned ids and bytes; another seed, other ids', async function () {
    const a = await poisonDataset(subset.source, cfg);
    const b = await poisonDataset(subset.source, cfg);
    const c = await poisonDataset(subset.source, { ...cfg, seed: 8 });
    expect(a.truth).to.deep.equal(b.truth);
    expect(c.truth.poisoned).to.not.deep.equal(a.truth.poisoned);
    const all = Array.from({ length: subset.source.size }, (_, i) => i);
    expect(Buffer.compare(await a.poisoned.readImages(all), await b.poisoned.readImages(all))).to.equal(0);
  });

  it('test images get the trigger without perturbation, also from an attack made without the clean set', async function () {
    const attack = await createAttack(cfg, S);
    const img = (await subset.source.readImages([42])).slice();
    const out = attack.applyTest(img, S, S, new Rng(0));
    for (let p = 0; p < S * S; p++) {
      for (let c = 0; c < 3; c++) expect(out[p * 3 + c]).to.equal(trigger.mask[p] ? trigger.pattern[p * 3 + c] : img[p * 3 + c]);
    }
    expect(() => attack.applyTrain(img, S, S, 42, new Rng(0))).to.throw(/sample 42 was not perturbed/);
    const asr = await triggeredTestSet(subset.source, attack, 0, 0);
    expect(asr.size).to.equal(90);
  });

  it('asks for no more than the target class holds, and for no covers', async function () {
    await poisonDataset(subset.source, { ...cfg, rate: 0.2 }).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/20 poisoned \+ 0 covers requested but only 10 samples are of target class 0/),
    );
    await poisonDataset(subset.source, { ...cfg, coverRate: 0.01 }).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/clean-label attack has no covers/),
    );
  });
});
