import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { poisonDataset, writePreview } from '../../attacks/index.js';
import { previewPixels } from '../../attacks/preview.js';
import { InMemoryImages } from '../../data/dataset.js';
import { Rng } from '../../ml/random.js';

const S = 32;
const PX = S * S * 3;

describe('attacks: preview grid', function () {
  const rng = new Rng(5);
  const data = new InMemoryImages({
    classes: ['a', 'b', 'c', 'd'],
    height: S,
    width: S,
    labels: Int32Array.from({ length: 100 }, (_, i) => i % 4),
    ids: Array.from({ length: 100 }, (_, i) => `${i}.png`),
    pixels: Uint8Array.from({ length: 100 * PX }, () => rng.int(256)),
  });

  it('shows clean | poisoned | amplified difference | test trigger per sample, poisoned rows then covers', async function () {
    const { poisoned, truth, attack } = await poisonDataset(data, { name: 'adap-blend', targetClass: 0, rate: 0.1, seed: 1 });
    const { pixels, width, height, rows } = await previewPixels(data, poisoned, truth, attack, { rows: 3, covers: 2, tile: 64 });
    expect(rows).to.deep.equal([...truth.poisoned.slice(0, 3), ...truth.cover!.slice(0, 2)]);
    // 2x scale: 64-pixel tiles, 2-pixel gaps.
    expect([width, height]).to.deep.equal([4 * 64 + 5 * 2, 5 * 64 + 6 * 2]);
    const at = (row: number, col: number, y: number, x: number) => {
      const top = 2 + row * 66 + 2 * y;
      const left = 2 + col * 66 + 2 * x;
      return Array.from(pixels.subarray((top * width + left) * 3, (top * width + left) * 3 + 3));
    };
    const r = 1;
    const clean = await data.readImages([rows[r]]);
    const stored = await poisoned.readImages([rows[r]]);
    const test = attack.applyTest(clean.slice(), S, S, new Rng(0));
    for (const [y, x] of [
      [0, 0],
      [5, 17],
      [31, 31],
    ]) {
      const p = (y * S + x) * 3;
      expect(at(r, 0, y, x)).to.deep.equal(Array.from(clean.subarray(p, p + 3)));
      expect(at(r, 1, y, x)).to.deep.equal(Array.from(stored.subarray(p, p + 3)));
      expect(at(r, 2, y, x)).to.deep.equal([0, 1, 2].map((c) => Math.min(255, 8 * Math.abs(stored[p + c] - clean[p + c]))));
      expect(at(r, 3, y, x)).to.deep.equal(Array.from(test.subarray(p, p + 3)));
    }
  });

  it('writes a PNG of that size', async function () {
    const dir = await mkdtemp(join(tmpdir(), 'preview-test-'));
    try {
      const { poisoned, truth, attack } = await poisonDataset(data, { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 });
      await writePreview(join(dir, 'preview.png'), data, poisoned, truth, attack);
      const meta = await sharp(join(dir, 'preview.png')).metadata();
      // Default: 6 poisoned rows, no covers, 96-pixel tiles (3x).
      expect([meta.format, meta.width, meta.height]).to.deep.equal(['png', 4 * 96 + 5 * 2, 6 * 96 + 7 * 2]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
