import { expect } from 'chai';
import { cholesky, choleskySolve, sharedGaussians } from '../../ml/class-gaussians.js';
import { matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { flowArgmax } from '../../ml/relabel.js';

/**
 * Two candidate classes whose shared covariance is wide along x (sd 4) and narrow along y
 * (sd 0.5): class 1 around (0, 0), class 2 around (3, 1), 200 samples each; class 0 is the
 * target, 10 samples at (3, 0). The nearest mean in plain distance is class 2's (1 against 3),
 * in the covariance's metric class 1's ((3/4)^2 = 0.56 against (1/0.5)^2 = 4).
 */
function anisotropic() {
  const rng = new Rng(4);
  const labels: number[] = [];
  const rows: number[][] = [];
  for (let i = 0; i < 10; i++) {
    labels.push(0);
    rows.push([3, 0]);
  }
  for (const [y, mx, my] of [
    [1, 0, 0],
    [2, 3, 1],
  ])
    for (let i = 0; i < 200; i++) {
      labels.push(y);
      rows.push([mx + 4 * rng.normal(), my + 0.5 * rng.normal()]);
    }
  const n = labels.length;
  return { features: matrix(n, 2, Float32Array.from(rows.flat())), labels: Int32Array.from(labels), n };
}

describe('class Gaussians with a shared covariance (relabel model shared-gaussian)', () => {
  it('cholesky: L L^T gives back the matrix, a matrix that is not positive definite is refused, and choleskySolve solves with it', () => {
    const rng = new Rng(1);
    const d = 6;
    const b = Float64Array.from({ length: d * d }, () => rng.normal());
    // A = B B^T + I is symmetric positive definite.
    const a = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) a[i * d + j] += b[i * d + k] * b[j * d + k];
    for (let i = 0; i < d; i++) a[i * d + i] += 1;
    const l = cholesky(Float64Array.from(a), d);
    for (let i = 0; i < d; i++)
      for (let j = 0; j < d; j++) {
        if (j > i) expect(l[i * d + j]).to.equal(0);
        let s = 0;
        for (let k = 0; k < d; k++) s += l[i * d + k] * l[j * d + k];
        expect(s).to.be.closeTo(a[i * d + j], 1e-9);
      }
    expect(() => cholesky(Float64Array.from([1, 2, 2, 1]), 2)).to.throw(/not positive definite at column 1/);
    // choleskySolve: A x = r for a known x.
    const x = Float64Array.from({ length: d }, () => rng.normal());
    const r = Array.from({ length: d }, (_, i) => x.reduce((s, v, j) => s + a[i * d + j] * v, 0));
    choleskySolve(l, d, r).forEach((v, i) => expect(v).to.be.closeTo(x[i], 1e-9));
  });

  it('picks the nearest class mean in the metric of the shared covariance, not in plain distance', () => {
    const { features, labels, n } = anisotropic();
    const all = Array.from({ length: n }, (_, i) => i);
    const targetRows = all.slice(0, 10);
    // Fitted on the candidates only (the target's rows are what is being relabelled).
    const model = sharedGaussians(features, labels, all.slice(10), 3);
    expect(model.choose(targetRows, 0)).to.deep.equal(Array(10).fill(1));
    // The flows' rule on a density that says "class 2" keeps saying it: the models differ.
    const density = matrix(n, 3, Float32Array.from(all.flatMap(() => [-5, -9, -1])));
    expect(flowArgmax(density).choose(targetRows, 0)).to.deep.equal(Array(10).fill(2));
  });

  it('never chooses the class asked about, and skips classes with nothing to fit on', () => {
    const { features, labels, n } = anisotropic();
    const all = Array.from({ length: n }, (_, i) => i);
    // Rows of class 1 asked about as if it were the target: only class 2 (and class 0's rows) are candidates.
    const model = sharedGaussians(features, labels, all, 3);
    const classOne = all.filter((i) => labels[i] === 1).slice(0, 20);
    expect(model.choose(classOne, 1).every((c) => c === 0 || c === 2)).to.equal(true);
    // Class 2 without fitted rows: class 1 is the only candidate for the target.
    const withoutTwo = sharedGaussians(
      features,
      labels,
      all.filter((i) => labels[i] === 1),
      3,
    );
    expect(withoutTwo.choose([0, 1], 0)).to.deep.equal([1, 1]);
    // Nothing to fit on but the class asked about.
    expect(() => sharedGaussians(features, labels, [0, 1], 3).choose([0], 0)).to.throw(/no class other than 0 has samples kept as clean/);
  });
});
