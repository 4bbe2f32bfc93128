import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selectBackend } from '../../backend/backend.js';
import { densityMatrix, foreignDensity } from '../../ml/density.js';
import { featureMoments } from '../../ml/matrix.js';
import { CHECKPOINT_FILE } from '../../ml/checkpoint.js';
import { ClassFlow, classMembers, loadFlow, meanNll, perClassFlows, saveFlow, trainClassFlow, type FlowParams } from '../../ml/flow.js';
import { AbortError } from '../../ml/loop.js';
import { matrix, selectRows, type Matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { poisonScoreOf, poisonScores } from '../../ml/score.js';

/** A flow whose couplings are far from the identity, so every part of the map is exercised. */
function randomFlow(dim: number, hidden: number, seed: number): ClassFlow {
  const rng = new Rng(seed);
  const base = ClassFlow.create(dim, hidden, seed);
  const p: FlowParams = base.toJSON();
  base.dispose();
  for (const [name, w] of Object.entries(p.weights)) {
    if (name === 'std') w.forEach((_, i) => (w[i] = rng.uniform(0.5, 2)));
    else if (name === 'mean' || name.endsWith('2')) w.forEach((_, i) => (w[i] = rng.uniform(-0.5, 0.5)));
  }
  return ClassFlow.fromJSON(p);
}

function gaussianRows(n: number, dim: number, rng: Rng, scale = 1): Matrix {
  return matrix(
    n,
    dim,
    Float32Array.from({ length: n * dim }, () => scale * rng.normal()),
  );
}

/** log|det| of a square float64 matrix by Gaussian elimination with partial pivoting. */
function logAbsDet(a: number[][]): number {
  const m = a.map((r) => r.slice());
  const n = m.length;
  let s = 0;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    [m[c], m[p]] = [m[p], m[c]];
    s += Math.log(Math.abs(m[c][c]));
    for (let r = c + 1; r < n; r++) {
      const f = m[r][c] / m[c][c];
      for (let k = c; k < n; k++) m[r][k] -= f * m[c][k];
    }
  }
  return s;
}

/**
 * 4-d Gaussian whose second half depends linearly on the first (the structure one coupling can
 * represent exactly): a ~ N(1, 1), b ~ N(-2, 4), c = 0.8a + 0.3e1, d = -0.5a + 0.6b + 0.4e2.
 * Entropy = 2 log(2 pi e) + 0.5 log det Sigma, det Sigma = 1 * 4 * 0.09 * 0.16.
 */
function correlatedGaussian(n: number, rng: Rng): Matrix {
  const x = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    const a = 1 + rng.normal();
    const b = -2 + 2 * rng.normal();
    x.set([a, b, 0.8 * a + 0.3 * rng.normal(), -0.5 * a + 0.6 * b + 0.4 * rng.normal()], i * 4);
  }
  return matrix(n, 4, x);
}
const GAUSSIAN_ENTROPY = 2 * Math.log(2 * Math.PI * Math.E) + 0.5 * Math.log(4 * 0.09 * 0.16);

describe('ClassFlow (RealNVP, two affine couplings)', function () {
  before(async () => {
    await selectBackend('cpu', 'training', () => {});
  });

  it('inverse(forward(x)) reproduces x, for even and odd dimensions', () => {
    for (const dim of [6, 7]) {
      const flow = randomFlow(dim, 8, dim);
      const x = tf.tensor2d(gaussianRows(32, dim, new Rng(1), 3).data, [32, dim]);
      const { z, logDet } = flow.forward(x);
      const back = flow.inverse(z);
      const err = tf.max(tf.abs(tf.sub(back, x))).dataSync()[0];
      expect(err).to.be.below(1e-4);
      // The map is not the identity: z differs from x.
      expect(tf.max(tf.abs(tf.sub(z, x))).dataSync()[0]).to.be.above(0.1);
      expect(logDet.shape).to.deep.equal([32]);
      tf.dispose([x, z, logDet, back]);
      flow.dispose();
    }
  });

  it('log-det equals log|det J| of a finite-difference Jacobian (d = 4)', () => {
    const dim = 4;
    const flow = randomFlow(dim, 8, 11);
    const rng = new Rng(5);
    const eps = 1e-3;
    for (let trial = 0; trial < 3; trial++) {
      const x0 = Array.from({ length: dim }, () => rng.normal());
      // Rows: x0, then x0 + eps e_j and x0 - eps e_j for each j.
      const rows = [x0];
      for (let j = 0; j < dim; j++) for (const sgn of [1, -1]) rows.push(x0.map((v, k) => (k === j ? v + sgn * eps : v)));
      const x = tf.tensor2d(rows);
      const { z, logDet } = flow.forward(x);
      const zs = z.arraySync();
      const jac = Array.from({ length: dim }, (_, r) =>
        Array.from({ length: dim }, (_, c) => (zs[1 + 2 * c][r] - zs[2 + 2 * c][r]) / (2 * eps)),
      );
      expect(logDet.dataSync()[0]).to.be.closeTo(logAbsDet(jac), 5e-3);
      tf.dispose([x, z, logDet]);
    }
    flow.dispose();
  });

  it('logProb is log N(forward(x); 0, I) + logDet, and batching does not change it', () => {
    const flow = randomFlow(5, 8, 3);
    const x = gaussianRows(37, 5, new Rng(2));
    const xt = tf.tensor2d(x.data, [37, 5]);
    const { z, logDet } = flow.forward(xt);
    const zs = z.arraySync();
    const ld = logDet.dataSync();
    const expected = zs.map((r, i) => -0.5 * r.reduce((s, v) => s + v * v, 0) - 2.5 * Math.log(2 * Math.PI) + ld[i]);
    const batched = flow.logProb(x, 8);
    const whole = flow.logProb(x);
    expected.forEach((e, i) => expect(batched[i]).to.be.closeTo(e, 1e-4));
    expect(Array.from(batched)).to.deep.equal(Array.from(whole));
    tf.dispose([xt, z, logDet]);
    flow.dispose();
  });

  it('fits a correlated Gaussian to within 0.03 nats/dim of its entropy, far better than the untrained flow', async () => {
    const rng = new Rng(7);
    const train = correlatedGaussian(2000, rng);
    const held = correlatedGaussian(2000, rng);
    const { mean, std } = featureMoments(train);
    // Untrained: identity couplings after standardisation = the best diagonal Gaussian.
    const untrained = ClassFlow.create(4, 32, 1, mean, std);
    const { flow, nll } = await trainClassFlow(train, { epochs: 20, batchSize: 64, lr: 3e-3, hidden: 32 }, 1);
    const trainedNll = meanNll(flow, held);
    const untrainedNll = meanNll(untrained, held);
    expect(nll).to.have.length(20);
    expect(nll[19]).to.be.below(nll[0]);
    // Held-out NLL estimates entropy + KL; its sampling noise is ~0.03 nats in total.
    expect(Math.abs(trainedNll - GAUSSIAN_ENTROPY) / 4).to.be.below(0.03);
    // The diagonal model misses the correlations: ~2.3 nats worse in theory.
    expect(untrainedNll - trainedNll).to.be.above(1.5);
    flow.dispose();
    untrained.dispose();
  });

  it('leaks no tensors over training, logProb and dispose', async () => {
    const before = tf.memory().numTensors;
    const { flow } = await trainClassFlow(gaussianRows(50, 6, new Rng(3)), { epochs: 2, batchSize: 16, lr: 1e-3, hidden: 8 }, 2);
    flow.logProb(gaussianRows(10, 6, new Rng(4)));
    flow.dispose();
    expect(tf.memory().numTensors).to.equal(before);
    expect(() => flow.logProb(gaussianRows(1, 6, new Rng(4)))).to.throw(/after dispose/);
  });

  describe('checkpoints and cancellation', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'flow-ckpt-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    // 70 rows in batches of 16: a trailing batch of 6 every epoch.
    const x = gaussianRows(70, 4, new Rng(8));
    const cfg = { epochs: 5, batchSize: 16, lr: 1e-2, hidden: 8 };

    it('resumes after an abort to bit-identical weights and NLLs of an uninterrupted run', async () => {
      const full = await trainClassFlow(x, cfg, 9);
      expect(full.resumedFromEpoch).to.equal(0);

      const ac = new AbortController();
      const first = await trainClassFlow(x, cfg, 9, {
        checkpointDir: dir,
        signal: ac.signal,
        onEpoch: (p) => {
          if (p.epoch === 2) ac.abort();
        },
      }).then(
        () => expect.fail('the aborted run finished'),
        (e: unknown) => e,
      );
      expect(first).to.be.instanceOf(AbortError);

      const before = tf.memory().numTensors;
      const resumed = await trainClassFlow(x, cfg, 9, { checkpointDir: dir });
      expect(resumed.resumedFromEpoch).to.equal(2);
      expect(resumed.nll).to.deep.equal(full.nll);
      expect(resumed.nll).to.have.length(5);
      const a = full.flow.toJSON().weights;
      const b = resumed.flow.toJSON().weights;
      expect(Object.keys(b)).to.deep.equal(Object.keys(a));
      for (const k of Object.keys(a)) expect(Buffer.from(b[k].buffer).equals(Buffer.from(a[k].buffer)), k).to.equal(true);
      resumed.flow.dispose();
      // Loading the checkpoint leaves no tensors behind.
      expect(tf.memory().numTensors).to.equal(before);
      full.flow.dispose();
    });

    it('refuses, naming the file, a checkpoint of another run; extends its own run', async () => {
      (await trainClassFlow(x, { ...cfg, epochs: 1 }, 9, { checkpointDir: dir })).flow.dispose();
      const file = join(dir, CHECKPOINT_FILE);
      const other = gaussianRows(70, 4, new Rng(80)); // same shape, other samples
      // Started one at a time: a rejection nobody awaits yet would be an unhandled rejection.
      const runs: [string, () => Promise<unknown>][] = [
        ['seed', () => trainClassFlow(x, cfg, 10, { checkpointDir: dir })],
        ['lr', () => trainClassFlow(x, { ...cfg, lr: 2e-2 }, 9, { checkpointDir: dir })],
        ['hidden', () => trainClassFlow(x, { ...cfg, hidden: 16 }, 9, { checkpointDir: dir })],
        ['features', () => trainClassFlow(other, cfg, 9, { checkpointDir: dir })],
      ];
      for (const [what, run] of runs) {
        await run().then(
          () => expect.fail(`accepted a checkpoint of another ${what}`),
          (e: Error) =>
            expect(e.message, what)
              .to.include(file)
              .and.match(/different run/),
        );
      }
      // More epochs is the same run, continued.
      const more = await trainClassFlow(x, { ...cfg, epochs: 2 }, 9, { checkpointDir: dir });
      expect(more.resumedFromEpoch).to.equal(1);
      expect(more.nll).to.have.length(2);
      more.flow.dispose();
    });

    it('stops within a batch when the signal aborts, with an AbortError and no leak', async () => {
      const before = tf.memory().numTensors;
      const ac = new AbortController();
      let batches = 0;
      let epochs = 0;
      const error = await trainClassFlow(x, { ...cfg, epochs: 50 }, 1, {
        signal: ac.signal,
        onEpoch: () => {
          epochs++;
        },
        onBatch: (done) => {
          batches++;
          if (done === 2) ac.abort(new Error('cancelled by test'));
        },
      }).then(
        () => expect.fail('the aborted run finished'),
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(AbortError);
      expect((error as AbortError).cause).to.have.property('message', 'cancelled by test');
      expect(batches).to.equal(2);
      expect(epochs).to.equal(0);
      expect(tf.memory().numTensors).to.equal(before);
    });
  });

  it('perClassFlows fits class y on its own rows with seed + y, and refuses an empty class', async () => {
    const x = gaussianRows(30, 4, new Rng(12));
    const labels = Int32Array.from({ length: 30 }, (_, i) => (i * 7) % 3);
    expect(classMembers(labels, 1)).to.deep.equal([1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
    const cfg = { epochs: 2, batchSize: 4, lr: 1e-2, hidden: 8 };
    const flows = await perClassFlows(x, labels, 3, cfg, 40);
    expect(flows).to.have.length(3);
    const alone = await trainClassFlow(selectRows(x, classMembers(labels, 2)), cfg, 42);
    expect(flows[2].toJSON().weights).to.deep.equal(alone.flow.toJSON().weights);
    [...flows, alone.flow].forEach((f) => f.dispose());
    await perClassFlows(x, labels, 4, cfg, 40).then(
      () => expect.fail('fitted a flow to an empty class'),
      (e: Error) => expect(e.message).to.match(/class 3 has no samples/),
    );
  });

  it('rejects bad configurations and inputs with clear errors', async () => {
    const x = gaussianRows(8, 4, new Rng(1));
    await trainClassFlow(x, { epochs: 1, batchSize: 0, lr: 1e-3, hidden: 8 }, 1).then(
      () => expect.fail('accepted batchSize 0'),
      (e: Error) => expect(e.message).to.match(/batchSize/),
    );
    await trainClassFlow(matrix(0, 4), { epochs: 1, batchSize: 4, lr: 1e-3, hidden: 8 }, 1).then(
      () => expect.fail('accepted no samples'),
      (e: Error) => expect(e.message).to.match(/no samples/),
    );
    const flow = randomFlow(4, 8, 1);
    expect(() => flow.logProb(gaussianRows(2, 5, new Rng(1)))).to.throw(/expected 4 columns/);
    flow.dispose();
  });

  describe('saveFlow / loadFlow', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'flow-test-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('round-trips to identical log-probabilities', async () => {
      const flow = randomFlow(7, 8, 21);
      const file = join(dir, 'nested', 'class-3.flow.json');
      await saveFlow(flow, file);
      const loaded = await loadFlow(file);
      const x = gaussianRows(20, 7, new Rng(6), 2);
      expect(Array.from(loaded.logProb(x))).to.deep.equal(Array.from(flow.logProb(x)));
      flow.dispose();
      loaded.dispose();
    });

    it('names the file and the problem for a bad flow file', async () => {
      const wrong = join(dir, 'wrong.json');
      await writeFile(wrong, JSON.stringify({ format: 'something-else' }));
      await loadFlow(wrong).then(
        () => expect.fail('loaded a non-flow file'),
        (e: Error) =>
          expect(e.message)
            .to.include(wrong)
            .and.match(/not a class flow/),
      );
      const flow = randomFlow(4, 8, 1);
      const truncated = join(dir, 'truncated.json');
      await saveFlow(flow, truncated);
      const body = JSON.parse(await import('node:fs/promises').then((fs) => fs.readFile(truncated, 'utf8')));
      body.weights['c1.w2'] = Buffer.from(new Float32Array(3).buffer).toString('base64');
      await writeFile(truncated, JSON.stringify(body));
      await loadFlow(truncated).then(
        () => expect.fail('loaded a truncated weight'),
        (e: Error) => expect(e.message).to.include(truncated).and.include("'c1.w2'"),
      );
      await loadFlow(join(dir, 'missing.json')).then(
        () => expect.fail('loaded a missing file'),
        (e: Error) => expect(e.message).to.include('missing.json'),
      );
      flow.dispose();
    });
  });
});

describe('density matrix, foreign density and poison score', function () {
  before(async () => {
    await selectBackend('cpu', 'training', () => {});
  });

  it('has one row per sample and one column per class, equal to each flow logProb, finite far away', () => {
    const flows = [randomFlow(6, 8, 1), randomFlow(6, 8, 2), randomFlow(6, 8, 3)];
    const x = gaussianRows(9, 6, new Rng(3));
    // Far points: a flow must still give a finite (very negative) log-density.
    x.data.fill(1e4, 0, 6);
    x.data.fill(-3e4, 6, 12);
    const d = densityMatrix(flows, x);
    expect([d.rows, d.cols]).to.deep.equal([9, 3]);
    flows.forEach((f, y) => {
      const lp = f.logProb(x);
      for (let i = 0; i < 9; i++) expect(d.data[i * 3 + y]).to.equal(lp[i]);
    });
    for (const v of d.data) expect(Number.isFinite(v)).to.equal(true);
    expect(d.data[0]).to.be.below(-1e3);
    flows.forEach((f) => f.dispose());
  });

  it('foreignDensity is the row maximum over the other classes; poisonScores is own minus their maximum or median', () => {
    // 3 samples x 3 classes (log densities).
    const d = matrix(3, 3, Float32Array.from([-1, -5, -3, -10, -2, -2.5, -7, -8, -6]));
    expect(Array.from(foreignDensity(d, 0))).to.deep.equal([-3, -2, -6]);
    expect(Array.from(foreignDensity(d, 2))).to.deep.equal([-1, -2, -7]);
    expect(Array.from(poisonScores(d, Int32Array.from([0, 1, 2]), 'max-foreign'))).to.deep.equal([2, 0.5, 1]);
    // Two foreign columns: their median is their mean (-4, -6.25, -7.5). The default is the median.
    expect(Array.from(poisonScores(d, Int32Array.from([0, 1, 2])))).to.deep.equal([3, 4.25, 1.5]);
    // Three foreign columns (-1, -5, -3): the middle one; the maximum would give 1.
    const four = matrix(1, 4, Float32Array.from([0, -1, -5, -3]));
    expect(poisonScores(four, Int32Array.from([0]), 'median-foreign')[0]).to.equal(3);
    expect(poisonScoreOf(four, 0, 0, 'median-foreign')).to.equal(3);
    expect(poisonScoreOf(four, 0, 0, 'max-foreign')).to.equal(1);
    expect(() => poisonScores(d, Int32Array.from([0, 3, 1]))).to.throw(/label 3/);
    expect(() => foreignDensity(d, 3)).to.throw(/out of range/);
  });
});
