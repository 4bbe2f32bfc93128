import { expect } from 'chai';
import type { ImageSource } from '../../data/types.js';
import { componentsFor, fitRowsOf, pixelComponents, thumbnails } from '../../ml/pixel-components.js';
import { Rng } from '../../ml/random.js';

/**
 * `n` images of height x width whose top half has brightness a_i and bottom half b_i (all three
 * channels), a_i spread widely and b_i narrowly: the first principal component of any
 * thumbnail is the top half's brightness, the second the bottom half's.
 */
function halves(n: number, height: number, width: number): { source: ImageSource; a: number[]; b: number[]; reads: number[][] } {
  const rng = new Rng(11);
  const a = Array.from({ length: n }, () => 128 + 60 * Math.max(-2, Math.min(2, rng.normal())));
  const b = Array.from({ length: n }, () => 128 + 15 * Math.max(-2, Math.min(2, rng.normal())));
  const reads: number[][] = [];
  const size = height * width * 3;
  return {
    a,
    b,
    reads,
    source: {
      classes: ['x'],
      height,
      width,
      size: n,
      labels: new Int32Array(n),
      ids: a.map((_, i) => `img${i}`),
      async readImages(indices) {
        const idx = Array.from(indices);
        reads.push(idx);
        const out = new Uint8Array(idx.length * size);
        idx.forEach((i, k) => {
          for (let y = 0; y < height; y++)
            for (let x = 0; x < width; x++)
              out.fill(Math.round(y < height / 2 ? a[i] : b[i]), k * size + (y * width + x) * 3, k * size + (y * width + x + 1) * 3);
        });
        return out;
      },
    },
  };
}

function correlation(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  const mx = Array.from(x).reduce((s, v) => s + v, 0) / n;
  const my = Array.from(y).reduce((s, v) => s + v, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

const column = (data: Float32Array, cols: number, c: number) => Array.from({ length: data.length / cols }, (_, i) => data[i * cols + c]);

describe('pixel components (relabel.pixelComponents)', () => {
  it('box-averages each image to the thumbnail, every pixel in exactly one cell, scaled to [0, 1]', () => {
    // One 5x5 image, value 10 * y + x in channel 0, 255 in channel 1, 0 in channel 2, to 2x2:
    // rows 0-2 and 3-4, columns 0-2 and 3-4 (floor(p * 2 / 5)).
    const px = new Uint8Array(5 * 5 * 3);
    for (let y = 0; y < 5; y++)
      for (let x = 0; x < 5; x++) {
        px[(y * 5 + x) * 3] = 10 * y + x;
        px[(y * 5 + x) * 3 + 1] = 255;
      }
    const t = thumbnails(px, 1, 5, 5, 2, 2);
    const cell = (ys: number[], xs: number[]) =>
      ys.flatMap((y) => xs.map((x) => 10 * y + x)).reduce((s, v) => s + v, 0) / (ys.length * xs.length) / 255;
    const expected = [
      [cell([0, 1, 2], [0, 1, 2]), 1, 0],
      [cell([0, 1, 2], [3, 4]), 1, 0],
      [cell([3, 4], [0, 1, 2]), 1, 0],
      [cell([3, 4], [3, 4]), 1, 0],
    ].flat();
    expect(Array.from(t).map((v) => +v.toFixed(6))).to.deep.equal(expected.map((v) => +v.toFixed(6)));
    expect(() => thumbnails(px, 2, 5, 5, 2, 2)).to.throw(/thumbnails: 75 bytes for 2 images of 5x5x3/);
  });

  it('fits on evenly spaced rows, or all of them when there are few enough', () => {
    expect(Array.from(fitRowsOf(10, 4))).to.deep.equal([0, 2, 5, 7]);
    expect(Array.from(fitRowsOf(3, 10))).to.deep.equal([0, 1, 2]);
  });

  it("finds the images' layout: the first component is the widely varying half, the second the other; columns standardised", async () => {
    const { source, a, b } = halves(200, 32, 32);
    const pc = await pixelComponents(source, 2);
    expect([pc.rows, pc.cols]).to.deep.equal([200, 2]);
    expect(Math.abs(correlation(column(pc.data, 2, 0), a))).to.be.above(0.99);
    expect(Math.abs(correlation(column(pc.data, 2, 1), b))).to.be.above(0.99);
    for (const c of [0, 1]) {
      const v = column(pc.data, 2, c);
      const mean = v.reduce((s, x) => s + x, 0) / v.length;
      expect(Math.abs(mean)).to.be.below(1e-5);
      expect(v.reduce((s, x) => s + (x - mean) ** 2, 0) / (v.length - 1)).to.be.closeTo(1, 1e-4);
    }
  });

  it('fitted on a subset, it reads the fit rows, then streams every sample once, and gives the same components', async () => {
    const full = await pixelComponents(halves(200, 8, 8).source, 2);
    const { source, reads } = halves(200, 8, 8);
    const sub = await pixelComponents(source, 2, { maxFitRows: 50 });
    expect(reads.flat().slice(0, 50)).to.deep.equal(Array.from(fitRowsOf(200, 50)));
    expect(reads.flat().slice(50)).to.deep.equal(Array.from({ length: 200 }, (_, i) => i));
    // Two components of a two-valued image: the subset spans the same plane, so the same rows
    // up to each column's sign.
    for (const c of [0, 1]) expect(Math.abs(correlation(column(full.data, 2, c), column(sub.data, 2, c)))).to.be.above(0.99);
  });

  it('gives fewer components when the thumbnail has fewer values or the fit fewer samples, and stops when aborted', async () => {
    const { source } = halves(20, 4, 4);
    // A 4x4 image stays 4x4: 48 values; 20 samples give at most 19 components.
    expect(componentsFor(64, 20, 4, 4)).to.equal(19);
    expect(componentsFor(64, 1000, 4, 4)).to.equal(48);
    expect(componentsFor(64, 1000, 32, 32)).to.equal(64);
    expect(componentsFor(64, 1000, 32, 32, { maxFitRows: 10 })).to.equal(9);
    expect((await pixelComponents(source, 64)).cols).to.equal(19);
    const failure = (k: number, signal?: AbortSignal) =>
      pixelComponents(source, k, signal ? { signal } : {}).then(
        () => 'resolved',
        (err: Error) => err.message,
      );
    expect(await failure(0)).to.match(/k = 0 is not a positive integer/);
    const controller = new AbortController();
    controller.abort();
    expect(await failure(2, controller.signal)).to.match(/pixelComponents: sample 0\/20/);
  });
});
