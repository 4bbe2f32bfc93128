import { expect } from 'chai';
import { join } from 'node:path';
import sharp from 'sharp';
import { createAttack, poisonDataset, triggeredTestSet, loadTrigger } from '../../attacks/index.js';
import { triggersDir } from '../../attacks/triggers.js';
import { bicubicUpsample, gridSample, identityGrid, warpGrid } from '../../attacks/wanet.js';
import { CIFAR10_CLASSES, ensureCifar10 } from '../../data/cifar10.js';
import type { ImageSource } from '../../data/types.js';
import { Rng } from '../../ml/random.js';

const S = 32;
const PX = S * S * 3;

async function decode(path: string): Promise<Uint8Array> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).to.deep.equal([S, S, 3]);
  return new Uint8Array(data);
}

/**
 * The first `perClass` images of each class of the CIFAR-10 test split, decoded by sharp. Its
 * readImages hands out views of its own storage, the way an in-memory set may, so a transform
 * that wrote into them would be caught.
 */
async function cifarSource(perClass: number): Promise<ImageSource & { pixels: Uint8Array }> {
  const { test } = await ensureCifar10();
  const ids: string[] = [];
  const labels: number[] = [];
  for (let c = 0; c < CIFAR10_CLASSES.length; c++) {
    for (let k = 0; k < perClass; k++) {
      ids.push(`${CIFAR10_CLASSES[c]}/${String(k).padStart(4, '0')}.jpg`);
      labels.push(c);
    }
  }
  const pixels = new Uint8Array(ids.length * PX);
  const decoded = await Promise.all(ids.map((id) => decode(join(test, id))));
  decoded.forEach((img, i) => pixels.set(img, i * PX));
  return {
    classes: CIFAR10_CLASSES,
    height: S,
    width: S,
    size: ids.length,
    labels: Int32Array.from(labels),
    ids,
    pixels,
    async readImages(indices) {
      if (indices.length === 1) return pixels.subarray(indices[0] * PX, (indices[0] + 1) * PX);
      const out = new Uint8Array(indices.length * PX);
      for (let j = 0; j < indices.length; j++) out.set(pixels.subarray(indices[j] * PX, (indices[j] + 1) * PX), j * PX);
      return out;
    },
  };
}

function changedPixels(a: Uint8Array, b: Uint8Array, w: number): [number, number][] {
  const out: [number, number][] = [];
  for (let p = 0; p < a.length / 3; p++) {
    if (a[p * 3] !== b[p * 3] || a[p * 3 + 1] !== b[p * 3 + 1] || a[p * 3 + 2] !== b[p * 3 + 2]) out.push([Math.floor(p / w), p % w]);
  }
  return out;
}

describe('attacks', function () {
  let source: Awaited<ReturnType<typeof cifarSource>>;
  let pristine: Uint8Array;
  const rng = () => new Rng(1);

  before(async function () {
    source = await cifarSource(20);
    pristine = source.pixels.slice();
  });

  after(function () {
    // No attack, view or save may have written into the clean set.
    expect(Buffer.compare(source.pixels, pristine)).to.equal(0);
  });

  describe('triggers', function () {
    it('loads the BadNets patch with its 3x3 mask and a mask-less trigger by its non-black pixels', async function () {
      const patch = await loadTrigger('badnet_patch_32.png');
      expect(patch.height).to.equal(32);
      expect(patch.mask.reduce((a, b) => a + b, 0)).to.equal(9);
      const apple = await loadTrigger('apple_white.png');
      const { data } = await sharp(join(triggersDir(), 'apple_white.png')).raw().toBuffer({ resolveWithObject: true });
      let nonBlack = 0;
      for (let p = 0; p < 32 * 32; p++) if (data[p * 3] || data[p * 3 + 1] || data[p * 3 + 2]) nonBlack++;
      expect(apple.mask.reduce((a, b) => a + b, 0))
        .to.equal(nonBlack)
        .and.to.be.within(1, 32 * 32 - 1);
    });

    it('resizes to the requested size and keeps the mask binary', async function () {
      const t = await loadTrigger('badnet_patch_32.png', 64);
      expect([t.height, t.width, t.pattern.length]).to.deep.equal([64, 64, 64 * 64 * 3]);
      expect(new Set(t.mask)).to.deep.equal(new Set([0, 1]));
      expect(t.mask.reduce((a, b) => a + b, 0)).to.equal(36); // 3x3 scaled by 2 with nearest neighbour
    });

    it('names the missing file and the environment variable', async function () {
      const saved = process.env.BACKDOOR_AUDIT_SHARED_DATA;
      process.env.BACKDOOR_AUDIT_SHARED_DATA = '/nonexistent/shared-data';
      try {
        await loadTrigger('apple_white.png').then(
          () => expect.fail('should throw'),
          (err: Error) =>
            expect(err.message).to.include('/nonexistent/shared-data/triggers/apple_white.png').and.include('BACKDOOR_AUDIT_SHARED_DATA'),
        );
      } finally {
        if (saved === undefined) delete process.env.BACKDOOR_AUDIT_SHARED_DATA;
        else process.env.BACKDOOR_AUDIT_SHARED_DATA = saved;
      }
    });
  });

  describe('BadNets', function () {
    it('changes exactly the 3x3 upper-left square, to the toolbox pattern', async function () {
      const attack = await createAttack({ name: 'badnets', targetClass: 0, rate: 0.1, seed: 0 }, S);
      const img = await source.readImages([37]);
      const before = img.slice();
      const out = attack.applyTrain(img, S, S, 37, rng());
      expect(Buffer.compare(img, before)).to.equal(0); // input untouched
      for (const [y, x] of changedPixels(img, out, S)) expect(y < 3 && x < 3, `pixel ${y},${x}`).to.equal(true);
      // badnet_patch_32.png: white on the anti-diagonal corners and centre of its 3x3 square.
      const white = new Set(['0,2', '1,1', '2,0', '2,2']);
      for (let y = 0; y < 3; y++) {
        for (let x = 0; x < 3; x++) {
          const v = white.has(`${y},${x}`) ? 255 : 0;
          expect(Array.from(out.subarray((y * S + x) * 3, (y * S + x) * 3 + 3))).to.deep.equal([v, v, v]);
        }
      }
      expect(Buffer.compare(attack.applyTest(img, S, S, rng()), out)).to.equal(0);
    });

    it('lower-right reproduces the trigger file where its mask is set', async function () {
      const attack = await createAttack({ name: 'badnets', targetClass: 0, rate: 0.1, seed: 0, corner: 'lower-right' }, S);
      const out = attack.applyTest(new Uint8Array(PX).fill(77), S, S, rng());
      const file = await decode(join(triggersDir(), 'badnet_patch_32.png'));
      const changed = new Set<string>();
      for (let p = 0; p < S * S; p++) {
        const masked = Math.floor(p / S) >= 29 && p % S >= 29;
        const expected = masked ? Array.from(file.subarray(p * 3, p * 3 + 3)) : [77, 77, 77];
        expect(Array.from(out.subarray(p * 3, p * 3 + 3))).to.deep.equal(expected);
        if (masked) changed.add(`${p}`);
      }
      expect(changed.size).to.equal(9);
    });

    it('stamps the 32x32 logo upper-left on 224x224 images', async function () {
      const attack = await createAttack({ name: 'badnets', targetClass: 0, rate: 0.1, seed: 0 }, 224);
      const img = new Uint8Array(224 * 224 * 3).fill(40);
      const changed = changedPixels(img, attack.applyTest(img, 224, 224, rng()), 224);
      expect(changed.length).to.be.greaterThan(100);
      for (const [y, x] of changed) expect(y < 32 && x < 32).to.equal(true);
      expect(() => attack.applyTest(new Uint8Array(PX), S, S, rng())).to.throw(/224x224/);
    });
  });

  describe('Blend', function () {
    it('gives round(0.9 x + 0.1 t) on a constant image (known answer)', async function () {
      const attack = await createAttack({ name: 'blend', targetClass: 0, rate: 0.1, seed: 0 }, S);
      const out = attack.applyTrain(new Uint8Array(PX).fill(100), S, S, 0, rng());
      // hellokitty_32.png pixel (0, 0) is (252, 168, 202): 90 + 25.2, 90 + 16.8, 90 + 20.2.
      expect(Array.from(out.subarray(0, 3))).to.deep.equal([115, 107, 110]);
      const kitty = await decode(join(triggersDir(), 'hellokitty_32.png'));
      for (let i = 0; i < PX; i++) expect(out[i]).to.equal(Math.round(90 + 0.1 * kitty[i]));
    });

    it('blends seeded noise on 224x224 images: same seed same trigger, other seed other', async function () {
      const cfg = { name: 'blend', targetClass: 0, rate: 0.1, seed: 3 } as const;
      const img = new Uint8Array(224 * 224 * 3).fill(128);
      const a = (await createAttack(cfg, 224)).applyTest(img, 224, 224, rng());
      const b = (await createAttack(cfg, 224)).applyTest(img, 224, 224, rng());
      const c = (await createAttack({ ...cfg, seed: 4 }, 224)).applyTest(img, 224, 224, rng());
      expect(Buffer.compare(a, b)).to.equal(0);
      expect(Buffer.compare(a, c)).to.not.equal(0);
      // 0.9 * 128 + 0.1 * u with u uniform in 0..255: every value within 115..141, spread out.
      expect(a.reduce((m, v) => Math.min(m, v), 255)).to.be.within(115, 117);
      expect(a.reduce((m, v) => Math.max(m, v), 0)).to.be.within(139, 141);
    });
  });

  describe('SIG', function () {
    it('adds 20 sin(2 pi 6 j / 32) to column j of every row and channel, clipped and rounded (known answer)', async function () {
      const attack = await createAttack({ name: 'sig', targetClass: 0, rate: 0.05, seed: 0 }, S);
      const img = new Uint8Array(PX).fill(100);
      img.fill(250, 0, S * 3); // first row bright: the peaks must clip at 255
      const out = attack.applyTrain(img, S, S, 0, rng());
      // Column 1: 20 sin(2 pi 6 / 32) = 18.48; column 8: sin(3 pi) = 0; column 3: 20 sin(9 pi / 8) = -7.65.
      expect(Array.from(out.subarray(S * 3 + 3, S * 3 + 6))).to.deep.equal([118, 118, 118]);
      expect(out[S * 3 + 8 * 3]).to.equal(100);
      expect(out[S * 3 + 3 * 3]).to.equal(92);
      expect(out[3]).to.equal(255);
      for (let i = 1; i < S; i++)
        for (let j = 0; j < S; j++) expect(out[(i * S + j) * 3 + 2]).to.equal(Math.round(100 + 20 * Math.sin((2 * Math.PI * j * 6) / S)));
      expect(Buffer.compare(attack.applyTest(img, S, S, rng()), out)).to.equal(0);
      const stronger = await createAttack({ name: 'sig', targetClass: 0, rate: 0.05, seed: 0, testDelta: 40 }, S);
      expect(stronger.applyTest(img, S, S, rng())[S * 3 + 3]).to.equal(137);
    });

    it('is clean-label: poisons target-class samples only and keeps every label', async function () {
      const { poisoned, truth } = await poisonDataset(source, { name: 'sig', targetClass: 2, rate: 0.05, seed: 4 });
      expect(truth.poisoned).to.have.length(Math.round(0.05 * source.size));
      for (const i of truth.poisoned) expect(source.labels[i]).to.equal(2);
      expect(Array.from(poisoned.labels)).to.deep.equal(Array.from(source.labels));
      const [i] = truth.poisoned;
      const img = await poisoned.readImages([i]);
      expect(Buffer.compare(img, source.pixels.subarray(i * PX, (i + 1) * PX))).to.not.equal(0);
    });

    it('rejects an amplitude outside (0, 255]', async function () {
      for (const delta of [0, 300])
        await createAttack({ name: 'sig', targetClass: 0, rate: 0.05, seed: 0, delta }, S).then(
          () => expect.fail(`delta ${delta} accepted`),
          (err: Error) => expect(err.message).to.match(/sig: delta must be in \(0, 255\]/),
        );
    });
  });

  describe('WaNet', function () {
    it('bicubic upsampling keeps constants and, corners aligned, the control points', function () {
      const constant = bicubicUpsample(new Float32Array(16 * 2).fill(0.3), 4, 2, 9, 9);
      for (const v of constant) expect(v).to.be.closeTo(0.3, 1e-6);
      const ctrl = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i));
      const up = bicubicUpsample(ctrl, 4, 1, 10, 10); // positions 0, 3, 6, 9 hit the control points
      for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) expect(up[y * 3 * 10 + x * 3]).to.be.closeTo(ctrl[y * 4 + x], 1e-6);
      expect(Array.from(bicubicUpsample(ctrl, 4, 1, 4, 4))).to.deep.equal(Array.from(ctrl));
    });

    it('bilinear sampling: identity grid, one-pixel shift and half-pixel average (known answers)', function () {
      const w = 4;
      const img = Uint8Array.from({ length: w * w * 3 }, (_, i) => (i * 7) % 256);
      expect(Array.from(gridSample(img, w, w, identityGrid(w, w)))).to.deep.equal(Array.from(img));
      const shift = identityGrid(w, w);
      for (let p = 0; p < w * w; p++) shift[p * 2] = Math.min(1, shift[p * 2] + 2 / (w - 1)); // x + 1 pixel
      const out = gridSample(img, w, w, shift);
      for (let y = 0; y < w; y++) {
        for (let x = 0; x < w; x++) {
          const src = (y * w + Math.min(x + 1, w - 1)) * 3;
          expect(Array.from(out.subarray((y * w + x) * 3, (y * w + x) * 3 + 3))).to.deep.equal(Array.from(img.subarray(src, src + 3)));
        }
      }
      // 3 wide, so that half a pixel is 0.5 of the grid, exact in float32.
      const small = Uint8Array.from({ length: 27 }, (_, i) => 10 * i);
      const half = identityGrid(3, 3);
      half[0] += 0.5; // pixel (0, 0) samples halfway between x = 0 and x = 1
      half[2 * 4 + 1] += 0.25; // pixel (1, 1) a quarter of the way from y = 1 to y = 2
      const out2 = gridSample(small, 3, 3, half);
      expect(Array.from(out2.subarray(0, 3))).to.deep.equal([15, 25, 35]);
      expect(Array.from(out2.subarray(12, 15))).to.deep.equal([120 + 0.25 * 90, 130 + 0.25 * 90, 140 + 0.25 * 90].map(Math.round));
    });

    it('with s = 0 is the identity on a real image', async function () {
      const attack = await createAttack({ name: 'wanet', targetClass: 0, rate: 0.1, seed: 5, s: 0 }, S);
      const img = await source.readImages([12]);
      expect(Buffer.compare(attack.applyTrain(img, S, S, 12, rng()), img)).to.equal(0);
    });

    it('with s = 0.5 moves pixels a little, deterministically per seed', async function () {
      const cfg = { name: 'wanet', targetClass: 0, rate: 0.1, seed: 5 } as const;
      const img = await source.readImages([12]);
      const a = (await createAttack(cfg, S)).applyTrain(img, S, S, 12, rng());
      const b = (await createAttack(cfg, S)).applyTest(img, S, S, new Rng(99));
      const c = (await createAttack({ ...cfg, seed: 6 }, S)).applyTrain(img, S, S, 12, rng());
      expect(a.length).to.equal(PX);
      expect(Buffer.compare(a, b)).to.equal(0);
      expect(Buffer.compare(a, c)).to.not.equal(0);
      let diff = 0;
      for (let i = 0; i < PX; i++) diff += Math.abs(a[i] - img[i]);
      const meanDiff = diff / PX;
      // A sub-pixel warp: visible in the bytes, far below what a different image would give.
      expect(meanDiff).to.be.greaterThan(0.5).and.lessThan(20);
      expect(changedPixels(img, a, S).length).to.be.greaterThan(S * S * 0.3);
      // The grid stays inside the image and moves by well under 2 pixels anywhere.
      const grid = warpGrid(S, S, 4, 0.5, new Rng(5));
      const id = identityGrid(S, S);
      let maxMove = 0;
      for (let i = 0; i < grid.length; i++) {
        expect(grid[i]).to.be.within(-1, 1);
        maxMove = Math.max(maxMove, (Math.abs(grid[i] - id[i]) * (S - 1)) / 2);
      }
      expect(maxMove).to.be.greaterThan(0.1).and.lessThan(2);
    });

    it('noise-mode covers differ from the poisoning warp and from each other', async function () {
      const attack = await createAttack({ name: 'wanet', targetClass: 0, rate: 0.1, seed: 5 }, S);
      const img = await source.readImages([12]);
      const warped = attack.applyTrain(img, S, S, 12, rng());
      const c1 = attack.applyCover!(img, S, S, 12, new Rng(1));
      const c2 = attack.applyCover!(img, S, S, 12, new Rng(2));
      expect(Buffer.compare(c1, warped)).to.not.equal(0);
      expect(Buffer.compare(c1, c2)).to.not.equal(0);
      expect(Buffer.compare(c1, attack.applyCover!(img, S, S, 12, new Rng(1)))).to.equal(0);
    });
  });

  describe('poisonDataset', function () {
    const cfg = { name: 'badnets', targetClass: 0, rate: 0.1, seed: 11 } as const;

    it('poisons round(rate * N) non-target samples, relabels them to the target, and records their labels', async function () {
      const { poisoned, truth } = await poisonDataset(source, cfg);
      expect(truth.poisoned).to.have.length(Math.round(0.1 * source.size));
      expect(new Set(truth.poisoned).size).to.equal(truth.poisoned.length);
      expect(truth.cover).to.equal(undefined);
      truth.poisoned.forEach((i, k) => {
        expect(source.labels[i]).to.not.equal(0);
        expect(truth.sourceLabels[k]).to.equal(source.labels[i]);
        expect(poisoned.labels[i]).to.equal(0);
      });
      const hit = new Set(truth.poisoned);
      for (let i = 0; i < source.size; i++) if (!hit.has(i)) expect(poisoned.labels[i]).to.equal(source.labels[i]);
      expect(poisoned.ids).to.deep.equal(source.ids);
      expect([poisoned.size, poisoned.height, poisoned.classes]).to.deep.equal([source.size, S, source.classes]);
    });

    it('applies the trigger to poisoned samples only, whatever the read order', async function () {
      const { poisoned, truth, attack } = await poisonDataset(source, cfg);
      const all = Array.from({ length: source.size }, (_, i) => source.size - 1 - i);
      const got = await poisoned.readImages(all);
      const hit = new Set(truth.poisoned);
      all.forEach((i, j) => {
        const clean = source.pixels.subarray(i * PX, (i + 1) * PX);
        const want = hit.has(i) ? attack.applyTrain(clean, S, S, i, rng()) : clean;
        expect(Buffer.compare(got.subarray(j * PX, (j + 1) * PX), want), `sample ${i}`).to.equal(0);
      });
    });

    it('same seed gives the same indices, another seed others', async function () {
      const a = (await poisonDataset(source, cfg)).truth;
      const b = (await poisonDataset(source, cfg)).truth;
      const c = (await poisonDataset(source, { ...cfg, seed: 12 })).truth;
      expect(a.poisoned).to.deep.equal(b.poisoned);
      expect(a.poisoned).to.not.deep.equal(c.poisoned);
    });

    it('WaNet adds noise-mode covers: label kept, warped, disjoint from the poisoned, stable per sample', async function () {
      const { poisoned, truth } = await poisonDataset(source, { name: 'wanet', targetClass: 0, rate: 0.1, seed: 3 });
      expect(truth.cover).to.have.length(Math.round(0.2 * 0.1 * source.size));
      const cover = truth.cover!;
      for (const i of cover) {
        expect(truth.poisoned).to.not.include(i);
        expect(poisoned.labels[i]).to.equal(source.labels[i]);
      }
      const batch = await poisoned.readImages(cover);
      for (let j = 0; j < cover.length; j++) {
        const one = await poisoned.readImages([cover[j]]);
        expect(Buffer.compare(batch.subarray(j * PX, (j + 1) * PX), one)).to.equal(0);
        expect(Buffer.compare(one, source.pixels.subarray(cover[j] * PX, (cover[j] + 1) * PX))).to.not.equal(0);
      }
    });

    it('rejects impossible requests with a clear message', async function () {
      await poisonDataset(source, { ...cfg, rate: 0.95 }).then(
        () => expect.fail('should throw'),
        (err: Error) => expect(err.message).to.match(/190 poisoned \+ 0 covers requested but only 180/),
      );
      await poisonDataset(source, { ...cfg, targetClass: 10 }).then(
        () => expect.fail('should throw'),
        (err: Error) => expect(err.message).to.match(/target class 10 outside 0\.\.9/),
      );
    });
  });

  describe('triggeredTestSet', function () {
    it('holds every non-target image, triggered, labelled with the target', async function () {
      const attack = await createAttack({ name: 'blend', targetClass: 2, rate: 0.1, seed: 0 }, S);
      const asr = await triggeredTestSet(source, attack, 2, 0);
      const expectedIdx = Array.from({ length: source.size }, (_, i) => i).filter((i) => source.labels[i] !== 2);
      expect(asr.size)
        .to.equal(expectedIdx.length)
        .and.equal(source.size - 20);
      expect(Array.from(asr.labels).every((l) => l === 2)).to.equal(true);
      expect(asr.ids).to.deep.equal(expectedIdx.map((i) => source.ids[i]));
      expect(asr.ids.some((id) => id.startsWith('bird/'))).to.equal(false);
      const got = await asr.readImages([0, 25, asr.size - 1]);
      [0, 25, asr.size - 1].forEach((j, k) => {
        const i = expectedIdx[j];
        const want = attack.applyTest(source.pixels.subarray(i * PX, (i + 1) * PX), S, S, rng());
        expect(Buffer.compare(got.subarray(k * PX, (k + 1) * PX), want)).to.equal(0);
      });
    });
  });
});
