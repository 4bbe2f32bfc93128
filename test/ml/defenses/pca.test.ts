// The linear algebra and clustering under the feature-space baselines, on known answers.
import { expect } from 'chai';
import { kMeans, meanSilhouette } from '../../../ml/defenses/kmeans.js';
import { principalComponents, symmetricEigen, topEigenvectors } from '../../../ml/defenses/pca.js';
import { matrix } from '../../../ml/matrix.js';
import { Rng } from '../../../ml/random.js';

describe('baseline helpers: eigenvectors, PCA, k-means, silhouette', () => {
  it('finds the leading eigenpair of a small matrix, sign fixed', () => {
    const a = Float64Array.from([2, 1, 0, 1, 2, 0, 0, 0, 1]);
    const { values, vectors } = topEigenvectors(a, 3, 1);
    expect(values[0]).to.be.closeTo(3, 1e-9);
    expect(Array.from(vectors).map((v) => +v.toFixed(9))).to.deep.equal([0.707106781, 0.707106781, 0]);
  });

  it('agrees with a full Jacobi decomposition on a random 30 x 30 scatter matrix', () => {
    const rng = new Rng(5);
    const n = 30;
    const x = Array.from({ length: 60 * n }, () => rng.normal() * (1 + rng.next() * 3));
    const a = new Float64Array(n * n);
    for (let r = 0; r < 60; r++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] += x[r * n + i] * x[r * n + j];
    const full = symmetricEigen(a, n);
    const { values, vectors } = topEigenvectors(a, n, 5);
    for (let c = 0; c < 5; c++) {
      expect(values[c], `value ${c}`).to.be.closeTo(full.values[c], 1e-6 * full.values[0]);
      // Same direction up to sign.
      let cos = 0;
      for (let t = 0; t < n; t++) cos += vectors[c * n + t] * full.vectors[c * n + t];
      expect(Math.abs(cos), `vector ${c}`).to.be.closeTo(1, 1e-6);
    }
  });

  it('projects centred rows on the principal directions', () => {
    // Points on the line y = 2x (plus the class mean): one component carries everything.
    const pts = [-2, -1, 0, 1, 2].flatMap((t) => [10 + t, 20 + 2 * t]);
    const { mean, scores, values } = principalComponents(matrix(5, 2, Float32Array.from(pts)), [0, 1, 2, 3, 4], 2);
    expect(Array.from(mean)).to.deep.equal([10, 20]);
    expect(Array.from(scores.filter((_, k) => k % 2 === 0)).map((s) => +s.toFixed(6))).to.deep.equal(
      [-2, -1, 0, 1, 2].map((t) => +(t * Math.sqrt(5)).toFixed(6)),
    );
    expect(values[1]).to.be.closeTo(0, 1e-9);
  });

  it('splits two groups with 2-means and gives their silhouette', () => {
    const pts = Float64Array.from([0, 1, 10, 11]);
    const { assignment, sizes } = kMeans(pts, 4, 1, 2, new Rng(1), 3);
    expect(assignment[0]).to.equal(assignment[1]);
    expect(assignment[2]).to.equal(assignment[3]);
    expect(assignment[0]).to.not.equal(assignment[2]);
    expect(Array.from(sizes)).to.deep.equal([2, 2]);
    // s(0) = 1 - 1 / 10.5, s(1) = 1 - 1 / 9.5, and symmetrically for 11 and 10.
    const expected = (2 * (1 - 1 / 10.5) + 2 * (1 - 1 / 9.5)) / 4;
    expect(meanSilhouette(pts, 4, 1, assignment, 2, [0, 1, 2, 3])).to.be.closeTo(expected, 1e-12);
  });
});
