// ml/batch-norm.ts must be tfjs-layers' BatchNormalization, only faster: the same output, input and
// weight gradients and moving averages (bit-equal where it uses the same ops, within float error
// through TensorFlow's fused kernels), the same weights in the same order.
import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend } from '../../backend/backend.js';
import { BATCH_NORM_TRAINING, BATCH_NORM_TRAINING_GRAD, BatchNorm } from '../../ml/batch-norm.js';
import { loadModel, saveModel } from '../../ml/model-io.js';
import { Rng } from '../../ml/random.js';

process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';

const SHAPE: [number, number, number, number] = [6, 5, 5, 7];
const ARGS = { momentum: 0.9, epsilon: 1e-5 };

/** A model of one batch-norm layer, its weights set from `seed` (gamma, beta, moving mean, moving variance). */
function oneLayer(kind: 'tfjs-layers' | 'ours', seed: number): tfl.LayersModel {
  const input = tfl.input({ shape: SHAPE.slice(1) });
  const layer = kind === 'ours' ? new BatchNorm({ ...ARGS, name: 'bn' }) : tfl.layers.batchNormalization({ axis: -1, ...ARGS, name: 'bn' });
  const model = tfl.model({ inputs: input, outputs: layer.apply(input) as tfl.SymbolicTensor });
  const rng = new Rng(seed);
  const c = SHAPE[3];
  const vec = (f: () => number) => tf.tensor1d(Float32Array.from({ length: c }, f));
  model.setWeights([vec(() => 0.5 + rng.next()), vec(() => rng.normal()), vec(() => rng.normal()), vec(() => 0.5 + rng.next())]);
  return model;
}

interface Pass {
  y: Float32Array;
  dx: Float32Array;
  dGamma: Float32Array;
  dBeta: Float32Array;
  movingMean: Float32Array;
  movingVariance: Float32Array;
  inference: Float32Array;
}

/** One training-mode forward and backward of a weighted sum, the moving averages after it, then an inference pass. */
function pass(model: tfl.LayersModel): Pass {
  const rng = new Rng(3);
  const size = SHAPE.reduce((a, b) => a * b);
  const x = tf.variable(
    tf.tensor4d(
      Float32Array.from({ length: size }, () => 2 * rng.normal() + 1),
      SHAPE,
    ),
  );
  const dy = tf.tensor4d(
    Float32Array.from({ length: size }, () => rng.normal()),
    SHAPE,
  );
  const [gamma, beta] = model.trainableWeights.map((w) => w.read() as tf.Variable);
  let y: Float32Array = new Float32Array();
  const { grads } = tf.variableGrads(() => {
    const out = model.apply(x, { training: true }) as tf.Tensor;
    y = out.dataSync() as Float32Array;
    return tf.sum(tf.mul(out, dy));
  }, [x, gamma, beta]);
  const weights = model.getWeights();
  const inference = tf.tidy(() => (model.apply(x, { training: false }) as tf.Tensor).dataSync() as Float32Array);
  const result = {
    y,
    dx: grads[x.name].dataSync() as Float32Array,
    dGamma: grads[gamma.name].dataSync() as Float32Array,
    dBeta: grads[beta.name].dataSync() as Float32Array,
    movingMean: weights[2].dataSync() as Float32Array,
    movingVariance: weights[3].dataSync() as Float32Array,
    inference,
  };
  tf.dispose([x, dy, ...Object.values(grads)]);
  return result;
}

function expectClose(a: Float32Array, b: Float32Array, what: string, tol: number): void {
  expect(a.length, what).to.equal(b.length);
  const scale = Math.max(1, ...Array.from(b, Math.abs));
  const worst = Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])));
  expect(worst / scale, `${what}: largest difference ${worst}`).to.be.below(tol);
}

describe('BatchNorm (ml/batch-norm.ts)', function () {
  this.timeout(60_000);

  it('on the plain-JS backend computes exactly what tfjs-layers computes', async () => {
    await selectBackend('cpu', 'training', () => {});
    const ours = pass(oneLayer('ours', 1));
    const theirs = pass(oneLayer('tfjs-layers', 1));
    for (const k of Object.keys(ours) as (keyof Pass)[]) expect(Array.from(ours[k]), k).to.deep.equal(Array.from(theirs[k]));
  });

  it('on native TensorFlow trains through the fused kernels and agrees with tfjs-layers', async function () {
    const info = await selectBackend('tensorflow', 'training', () => {}).catch((err: Error) => err);
    if (info instanceof Error) this.skip(); // no native TensorFlow here: backend.test.ts says why
    const model = oneLayer('ours', 2);
    const profile = await tf.profile(() => tf.dispose(pass(model) as unknown as tf.Tensor[]));
    const kernels = profile.kernels.map((k) => k.name);
    expect(kernels).to.include.members([BATCH_NORM_TRAINING, BATCH_NORM_TRAINING_GRAD]);
    expect(kernels, 'tf.moments is not used').to.not.include('SquaredDifference');
    const ours = pass(oneLayer('ours', 2));
    const theirs = pass(oneLayer('tfjs-layers', 2));
    // movingVariance too: TensorFlow's Bessel-corrected batch variance (x 150/149 here) would miss by ~7e-4.
    for (const k of Object.keys(ours) as (keyof Pass)[]) expectClose(ours[k], theirs[k], k, 1e-5);
  });

  it("holds tfjs-layers' weights in the same order, and saves as tfjs-layers' BatchNormalization", async () => {
    await selectBackend('cpu', 'training', () => {});
    const theirs = oneLayer('tfjs-layers', 4);
    const ours = oneLayer('ours', 5);
    const names = (m: tfl.LayersModel) => m.weights.map((w) => w.name.replace(/_\d+$/, '')); // tfjs-layers numbers repeated names
    expect(names(ours)).to.deep.equal(names(theirs)).and.to.deep.equal(['bn/gamma', 'bn/beta', 'bn/moving_mean', 'bn/moving_variance']);
    ours.setWeights(theirs.getWeights());
    const a = pass(ours);
    const b = pass(oneLayer('tfjs-layers', 4));
    expect(Array.from(a.y)).to.deep.equal(Array.from(b.y));
    const dir = await mkdtemp(join(tmpdir(), 'batch-norm-'));
    try {
      await saveModel(ours, join(dir, 'model'));
      const loaded = await loadModel(join(dir, 'model'));
      // Saved as tfjs-layers' BatchNormalization, with its config: any tfjs reads it.
      const standard = oneLayer('tfjs-layers', 4).layers[1];
      expect(loaded.layers[1].getClassName()).to.equal('BatchNormalization');
      expect(loaded.layers[1].getConfig()).to.deep.equal({ ...standard.getConfig(), name: 'bn' });
      const w = (m: tfl.LayersModel) => m.getWeights().map((t) => Array.from(t.dataSync()));
      expect(w(loaded)).to.deep.equal(w(ours));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
