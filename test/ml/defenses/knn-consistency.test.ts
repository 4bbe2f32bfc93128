import { expect } from 'chai';
import { defaultAuditConfig } from '../../../ml/config.js';
import { createDefense, type DefenseInput } from '../../../ml/defenses/index.js';
import { nearestNeighbours } from '../../../ml/defenses/knn-consistency.js';
import { matrix, type Matrix } from '../../../ml/matrix.js';
import { Rng } from '../../../ml/random.js';
import { synthetic, where } from './synthetic.js';

const knn = createDefense('knn-consistency');
const config = defaultAuditConfig.knnConsistency;

/** Brute force: every other sample sorted by cosine (computed as the defense does: float32 unit
 *  rows, products summed in index order), most similar first, ties by index. */
function bruteForce(x: Matrix, k: number): Int32Array {
  const { rows: n, cols: d, data } = x;
  const u = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let t = 0; t < d; t++) s += data[i * d + t] ** 2;
    for (let t = 0; t < d; t++) u[i * d + t] = data[i * d + t] * (s > 0 ? 1 / Math.sqrt(s) : 0);
  }
  const out = new Int32Array(n * k);
  for (let i = 0; i < n; i++) {
    const sims = Array.from({ length: n }, (_, j) => {
      let s = 0;
      for (let t = 0; t < d; t++) s += u[i * d + t] * u[j * d + t];
      return { j, s };
    }).filter((c) => c.j !== i);
    sims.sort((a, b) => b.s - a.s || a.j - b.j);
    out.set(
      sims.slice(0, k).map((c) => c.j),
      i * k,
    );
  }
  return out;
}

describe('knn-consistency defense', () => {
  it('defaults to k = 10, more than half disagreeing, relabelled when 7 of 10 agree', () => {
    expect(config).to.deep.equal({ k: 10, disagreeFraction: 0.5, relabelFraction: 0.7 });
  });

  it('finds the exact k nearest neighbours, ties by index, whatever tile the pairs fall in', () => {
    // 150 rows (three 64-row tiles, a ragged last one), with exact duplicates to create ties.
    const rng = new Rng(3);
    const n = 150;
    const d = 5;
    const data = Float32Array.from({ length: n * d }, () => rng.normal());
    for (const [dst, src] of [
      [70, 3],
      [140, 3],
      [71, 10],
      [149, 71],
    ])
      data.copyWithin(dst * d, src * d, src * d + d);
    const x = matrix(n, d, data);
    expect(nearestNeighbours(x, 7)).to.deep.equal(bruteForce(x, 7));
    expect(nearestNeighbours(x, 149)).to.deep.equal(bruteForce(x, 149));
    expect(Array.from(nearestNeighbours(x, 7).subarray(3 * 7, 3 * 7 + 2))).to.deep.equal([70, 140]);
  });

  it('relabels planted mislabelled samples to their true class and leaves consistent ones (and a tight planted cluster) alone', () => {
    const { input, mislabelled } = synthetic();
    const es = knn.split(input, config);
    const relabelled = where(es, (e) => e.action === 'relabel');
    expect(relabelled).to.deep.equal([...mislabelled.keys()]);
    for (const [i, y] of mislabelled) expect([es[i].newLabel, es[i].side]).to.deep.equal([y, 'poisoned']);
    expect(where(es, (e) => e.action === 'drop')).to.deep.equal([]);
    expect(es[400].reason).to.match(
      /k-NN consistency: (9|10) of 10 nearest neighbours not labelled bird \(2\), (9|10) labelled automobile \(1\) -> relabelled to automobile \(1\)/,
    );
    expect(es[0]).to.deep.include({ action: 'keep', side: 'clean', score: 0 });
  });

  it('removes, on the poisoned side, an inconsistent sample whose neighbours have no clear majority', () => {
    // Classes 1 and 2 on two rays, class 0 on a third; sample 10 (labelled 0) lies between 1 and 2.
    const rows = [
      ...[1, 2, 3, 4, 5].map((j) => [1, 0.1 * j, 0]),
      ...[1, 2, 3, 4, 5].map((j) => [0.1 * j, 1, 0]),
      [1, 1, 0],
      ...[1, 2, 3, 4].map((j) => [0.1 * j, 0, 1]),
    ];
    const labels = Int32Array.from([1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0]);
    const input: DefenseInput = {
      features: matrix(rows.length, 3, Float32Array.from(rows.flat())),
      labels,
      classNames: ['a', 'b', 'c'],
      ids: rows.map((_, i) => `s${i}`),
      density: matrix(rows.length, 3),
      detections: [],
    };
    const es = knn.split(input, { ...config, k: 4 });
    expect(es[10]).to.deep.include({ action: 'drop', side: 'poisoned', score: 1 });
    expect(es[10].reason).to.match(/4 of 4 nearest neighbours not labelled a \(0\), 2 labelled b \(1\), no clear majority -> removed/);
    // Its neighbours (two of class 1, two of class 2, exactly tied) are consistent samples: kept.
    expect(where(es, (e) => e.action !== 'keep')).to.deep.equal([10]);
  });

  it('rejects config values outside their ranges', () => {
    const { input } = synthetic();
    const n = input.labels.length;
    expect(() => knn.split(input, { ...config, k: 0 })).to.throw(
      `knn-consistency config: k must be an integer in 1..${n - 1} (N - 1), got 0`,
    );
    expect(() => knn.split(input, { ...config, k: n })).to.throw(/k must be an integer in 1\.\.599 \(N - 1\), got 600/);
    expect(() => knn.split(input, { ...config, disagreeFraction: 1 })).to.throw(/disagreeFraction must be in \[0, 1\), got 1/);
    expect(() => knn.split(input, { ...config, relabelFraction: 0.5 })).to.throw(
      /relabelFraction must be in \(0.5, 1\] \(a majority\), got 0.5/,
    );
  });
});
