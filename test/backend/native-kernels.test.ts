// backend/native-kernels.ts replaces ReLU's gradient for every backend once native TensorFlow
// loads: on it, one ReluGrad kernel; elsewhere tfjs-core's own formula, to the bit.
import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../../backend/backend.js';
import { Rng } from '../../ml/random.js';

process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';

/** d/dx of sum(relu(x) * w) on the active backend, with the kernels the pass ran. */
async function reluGradient(): Promise<{ grad: number[]; kernels: string[] }> {
  const rng = new Rng(11);
  // Exact zeros too: relu's gradient there is 0 by both definitions.
  const x = tf.tensor2d(
    Float32Array.from({ length: 64 }, (_, i) => (i % 8 === 0 ? 0 : rng.normal())),
    [8, 8],
  );
  const w = tf.tensor2d(
    Float32Array.from({ length: 64 }, () => rng.normal()),
    [8, 8],
  );
  let grad: number[] = [];
  const profile = await tf.profile(() => {
    const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.relu(v), w)))(x);
    grad = Array.from(g.dataSync());
    g.dispose();
  });
  tf.dispose([x, w]);
  return { grad, kernels: profile.kernels.map((k) => k.name) };
}

describe('native kernels: ReLU gradient', function () {
  this.timeout(60_000);

  it("is one ReluGrad kernel on native TensorFlow and equals the plain-JS backend, which keeps tfjs-core's formula", async function () {
    const before = await selectBackend('cpu', 'training', () => {}).then(reluGradient);
    const info = await selectBackend('tensorflow', 'training', () => {}).catch((err: Error) => err);
    if (info instanceof Error) this.skip(); // no native TensorFlow here: backend.test.ts says why
    const native = await reluGradient();
    expect(native.kernels).to.include('BackdoorAuditReluGrad').and.not.include('Step');
    expect(native.grad).to.deep.equal(before.grad); // 0 or w exactly: no arithmetic to differ in
    const after = await selectBackend('cpu', 'training', () => {}).then(reluGradient);
    expect(after.kernels).to.include('Step');
    expect(after.grad).to.deep.equal(before.grad);
  });
});
