import { expect } from 'chai';
import { createAttack, poisonDataset, triggeredTestSet } from '../../attacks/index.js';
import { ADAP_PATCH_TEST, ADAP_PATCH_TRAIN, blendPieces, createAdapBlend, createAdapPatch, gridPieces } from '../../attacks/adaptive.js';
import { loadTrigger } from '../../attacks/triggers.js';
import { InMemoryImages } from '../../data/dataset.js';
import { Rng } from '../../ml/random.js';

const S = 32;
const PX = S * S * 3;

/** n images of seeded random bytes, labels round-robin over 10 classes. */
function randomSet(n: number, seed: number): InMemoryImages {
  const rng = new Rng(seed);
  return new InMemoryImages({
    classes: Array.from({ length: 10 }, (_, c) => `c${c}`),
    height: S,
    width: S,
    labels: Int32Array.from({ length: n }, (_, i) => i % 10),
    ids: Array.from({ length: n }, (_, i) => `c${i % 10}/${i}.png`),
    pixels: Uint8Array.from({ length: n * PX }, () => rng.int(256)),
  });
}

/** Pixels (HW index) where two HWC images differ. */
function changed(a: Uint8Array, b: Uint8Array): Set<number> {
  const out = new Set<number>();
  for (let p = 0; p < a.length / 3; p++)
    if (a[p * 3] !== b[p * 3] || a[p * 3 + 1] !== b[p * 3 + 1] || a[p * 3 + 2] !== b[p * 3 + 2]) out.add(p);
  return out;
}

describe('attacks: Adap-Patch and Adap-Blend', function () {
  const data = randomSet(400, 1);

  it('blendPieces gives round(x + alpha * (t - x)) inside the mask only (known answer)', function () {
    const img = new Uint8Array(2 * 3).fill(100);
    const pattern = Uint8Array.from([200, 0, 255, 200, 0, 255]);
    const out = blendPieces(img, [{ pattern, mask: Uint8Array.from([1, 0]), alpha: 0.3 }]);
    expect(Array.from(out)).to.deep.equal([130, 70, 147, 100, 100, 100]);
  });

  it('Adap-Patch: each training image carries exactly one of the four patches at its alpha; test images both test patches at full strength', async function () {
    const attack = await createAdapPatch({ name: 'adap-patch', targetClass: 0, rate: 0.01, seed: 0 }, S);
    const files = await Promise.all(ADAP_PATCH_TRAIN.map((t) => loadTrigger(t.file)));
    const img = new Uint8Array(PX).fill(128);
    const seen = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const out = attack.applyTrain(img, S, S, i, new Rng(i));
      const diff = changed(img, out);
      // The trigger whose mask holds every changed pixel, and the blend at its alpha there.
      const k = files.findIndex((t) => [...diff].every((p) => t.mask[p]));
      expect(k, `sample ${i}`).to.be.at.least(0);
      seen.add(k);
      const p = [...diff][0];
      expect(out[p * 3]).to.equal(Math.round(128 + ADAP_PATCH_TRAIN[k].alpha * (files[k].pattern[p * 3] - 128)));
    }
    expect(seen.size).to.equal(4);
    const test = await Promise.all(ADAP_PATCH_TEST.map((t) => loadTrigger(t.file)));
    const out = attack.applyTest(img, S, S, new Rng(0));
    for (let p = 0; p < S * S; p++) {
      const t = test[1].mask[p] ? test[1] : test[0].mask[p] ? test[0] : undefined;
      expect(Array.from(out.subarray(p * 3, p * 3 + 3))).to.deep.equal(
        t ? Array.from(t.pattern.subarray(p * 3, p * 3 + 3)) : [128, 128, 128],
      );
    }
    // Same rng, same patch; the input is never written.
    expect(Buffer.compare(attack.applyTrain(img, S, S, 3, new Rng(3)), attack.applyTrain(img, S, S, 3, new Rng(3)))).to.equal(0);
    expect(img.every((v) => v === 128)).to.equal(true);
  });

  it('Adap-Blend: training images blend 8 of the 16 pieces at 0.15, test images the whole trigger at 0.2', async function () {
    const attack = await createAdapBlend({ name: 'adap-blend', targetClass: 0, rate: 0.01, seed: 0 }, S);
    const kitty = await loadTrigger('hellokitty_32.png');
    const pieces = gridPieces(kitty, S, 16, 0.15);
    // The pieces tile the trigger's mask without overlap.
    const cover = new Uint8Array(S * S);
    for (const p of pieces) p.mask.forEach((m, q) => (cover[q] += m));
    expect(Array.from(cover)).to.deep.equal(Array.from(kitty.mask));
    const img = new Uint8Array(PX).fill(90);
    const unions = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const rng = new Rng(i);
      const chosen = attack.chosenPieces(new Rng(i));
      expect(chosen).to.have.length(8);
      const out = attack.applyTrain(img, S, S, i, rng);
      const want = blendPieces(
        img,
        chosen.map((k) => pieces[k]),
      );
      expect(Buffer.compare(out, want)).to.equal(0);
      // Pixels of the other 8 pieces are untouched.
      const inChosen = new Uint8Array(S * S);
      for (const k of chosen) pieces[k].mask.forEach((m, q) => (inChosen[q] |= m));
      for (const p of changed(img, out)) expect(inChosen[p]).to.equal(1);
      unions.add(chosen.join(','));
    }
    expect(unions.size).to.be.greaterThan(10); // a fresh subset per sample
    const test = attack.applyTest(img, S, S, new Rng(0));
    for (let i = 0; i < PX; i++) expect(test[i]).to.equal(Math.round(90 + 0.2 * (kitty.pattern[i] - 90)));
  });

  it('conservatism: payload samples relabelled, as many regularisation samples keeping their labels, all triggered; same per seed', async function () {
    for (const name of ['adap-patch', 'adap-blend'] as const) {
      const cfg = { name, targetClass: 0, rate: 0.05, seed: 4 };
      const { poisoned, truth } = await poisonDataset(data, cfg);
      expect(truth.poisoned).to.have.length(20);
      expect(truth.cover).to.have.length(20);
      const cover = truth.cover!;
      expect(new Set([...truth.poisoned, ...cover]).size).to.equal(40);
      for (const i of truth.poisoned) {
        expect(data.labels[i]).to.not.equal(0);
        expect(poisoned.labels[i]).to.equal(0);
      }
      for (const i of cover) expect(poisoned.labels[i]).to.equal(data.labels[i]).and.not.equal(0);
      const all = [...truth.poisoned, ...cover];
      const got = await poisoned.readImages(all);
      const clean = await data.readImages(all);
      all.forEach((_, j) =>
        expect(changed(clean.subarray(j * PX, (j + 1) * PX), got.subarray(j * PX, (j + 1) * PX)).size).to.be.greaterThan(0),
      );
      const again = await poisonDataset(data, cfg);
      expect(again.truth).to.deep.equal(truth);
      expect(Buffer.compare(await again.poisoned.readImages(all), got)).to.equal(0);
      const other = await poisonDataset(data, { ...cfg, coverRate: 0.02 });
      expect(other.truth.cover).to.have.length(8);
    }
  });

  it('the triggered test set holds every non-target image with the whole trigger', async function () {
    const attack = await createAttack({ name: 'adap-blend', targetClass: 3, rate: 0.01, seed: 0 }, S);
    const asr = await triggeredTestSet(data, attack, 3, 0);
    expect(asr.size).to.equal(360);
    const i = Array.from(data.labels).findIndex((l) => l !== 3);
    const want = attack.applyTest((await data.readImages([i])).slice(), S, S, new Rng(0));
    expect(Buffer.compare(await asr.readImages([0]), want)).to.equal(0);
  });

  it('rejects a piece split that the image or the rate cannot take', async function () {
    const base = { name: 'adap-blend', targetClass: 0, rate: 0.01, seed: 0 } as const;
    await createAdapBlend({ ...base, pieces: 12 }, S).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/square number/),
    );
    await createAdapBlend({ ...base, pieces: 9 }, S).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/3x3 grid does not divide a 32x32/),
    );
    await createAdapBlend({ ...base, pieceRate: 0.01 }, S).then(
      () => expect.fail('should throw'),
      (err: Error) => expect(err.message).to.match(/at least one piece in/),
    );
  });
});
