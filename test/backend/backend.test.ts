// The native TensorFlow backend (installed by scripts/install-native-tf.sh) must compute what the
// pure-JS backend computes, and selectBackend must take it when it loads. Where the native
// install failed or was never run, the same tests check the fallback path instead: the skip
// reason is reported and training still gets a working backend.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradient functions; tfjs-layers' bundle registers them all
// (tfjs-node does too, through @tensorflow/tfjs, but the fallback path must not depend on it).
import '@tensorflow/tfjs-layers';
import { selectBackend, currentBackend, currentDevice } from '../../backend/backend.js';
import { repoRoot } from '../../data/paths.js';

// Quiets TensorFlow's start-up banner (oneDNN and CPU-feature notices) on stderr.
process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';

const NATIVE_PKG: string = '@tensorflow/tfjs-node';

/** Loads tfjs-node directly (not through backend/backend.ts): undefined if it loads, else why not. */
async function nativeLoadError(): Promise<string | undefined> {
  try {
    await import(NATIVE_PKG);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A small conv net's loss and its gradients w.r.t. input and every weight, as plain arrays. */
function convNetGradients(backend: string): { loss: number; grads: Float32Array[] } {
  const previous = tf.getBackend();
  tf.setBackend(backend);
  try {
    return tf.tidy(() => {
      // Values are built from integers so both backends start from bit-identical inputs.
      const ramp = (shape: number[], scale: number) => {
        const size = shape.reduce((a, b) => a * b, 1);
        const data = Float32Array.from({ length: size }, (_, i) => (((i * 37) % 23) - 11) * scale);
        return tf.tensor(data, shape);
      };
      const x = ramp([2, 8, 8, 3], 0.1) as tf.Tensor4D;
      const w1 = ramp([3, 3, 3, 4], 0.05) as tf.Tensor4D;
      const w2 = ramp([3, 3, 4, 5], 0.05) as tf.Tensor4D;
      const dense = ramp([5, 3], 0.1) as tf.Tensor2D;
      const labels = tf.oneHot(tf.tensor1d([0, 2], 'int32'), 3);
      const lossOf = (x: tf.Tensor, w1: tf.Tensor, w2: tf.Tensor, dense: tf.Tensor): tf.Scalar => {
        // conv (same) -> relu -> strided conv (valid) -> global mean pool -> dense -> softmax CE.
        const h1 = tf.relu(tf.conv2d(x as tf.Tensor4D, w1 as tf.Tensor4D, 1, 'same'));
        const h2 = tf.conv2d(h1, w2 as tf.Tensor4D, 2, 'valid');
        const pooled = tf.mean(h2, [1, 2]) as tf.Tensor2D;
        const logits = tf.matMul(pooled, dense as tf.Tensor2D);
        return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
      };
      const { value, grads } = tf.valueAndGrads(lossOf)([x, w1, w2, dense]);
      return { loss: value.dataSync()[0]!, grads: grads.map((g) => g.dataSync() as Float32Array) };
    });
  } finally {
    tf.setBackend(previous);
  }
}

function maxAbs(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

describe('native TensorFlow backend', function () {
  let loadError: string | undefined;
  // The backend other test files in this process had set, if any (null before first use).
  let startBackend: string | null;

  before(async function () {
    startBackend = tf.engine().backendName;
    loadError = await nativeLoadError();
  });

  after(async function () {
    // Importing tfjs-node registers 'tensorflow' at top priority; later test files must not
    // silently inherit it.
    await tf.setBackend(startBackend ?? 'cpu');
  });

  it("selectBackend('auto', 'training') takes tensorflow when tfjs-node loads, else says why not", async function () {
    const logged: string[] = [];
    const info = await selectBackend('auto', 'training', (line) => logged.push(line));
    const native = info.skipped.find((s) => s.name === 'tensorflow');
    if (loadError === undefined) {
      // tensorflow-gpu precedes it in the preference order; on a GPU machine that wins.
      expect(info.name).to.be.oneOf(['tensorflow', 'tensorflow-gpu']);
      expect(info.tfjsBackend).to.equal('tensorflow');
      expect(native, 'tensorflow must not be skipped when tfjs-node loads').to.equal(undefined);
    } else {
      expect(info.name).to.be.oneOf(['wasm', 'cpu']);
      expect(native?.reason).to.match(/@tensorflow\/tfjs-node (not loadable|is not installed)/);
      expect(logged.join('\n')).to.match(/tensorflow \(@tensorflow\/tfjs-node (not loadable|is not installed)/);
    }
    // An absent optional package reads as absent, not as a resolver error.
    const gpu = info.skipped.find((s) => s.name === 'tensorflow-gpu');
    if (gpu) expect(gpu.reason).not.to.match(/Cannot find package/);
    expect(currentBackend()).to.equal(info.name);
    expect(tf.getBackend()).to.equal(info.tfjsBackend);
  });

  it("selectBackend('tensorflow') activates tfjs-node, or fails naming the package", async function () {
    if (loadError === undefined) {
      const info = await selectBackend('tensorflow', 'training', () => {});
      const { device, ...rest } = info;
      expect(rest).to.deep.equal({ name: 'tensorflow', tfjsBackend: 'tensorflow', skipped: [] });
      expect(device).to.match(/^(CPU|GPU): libtensorflow \d+\.\d+\.\d+ /);
      expect(currentDevice()).to.equal(device);
      // A known answer through the native kernels: a 3x3x2 all-ones window summed by conv2d.
      const y = tf.conv2d(tf.ones([1, 3, 3, 2]) as tf.Tensor4D, tf.ones([3, 3, 2, 1]) as tf.Tensor4D, 1, 'valid');
      expect(Array.from(await y.data())).to.deep.equal([18]);
      y.dispose();
    } else {
      let message = '';
      await selectBackend('tensorflow', 'training', () => {}).catch((err: Error) => {
        message = err.message;
      });
      expect(message).to.match(/no usable tensor backend for training: tensorflow: @tensorflow\/tfjs-node (not loadable|is not installed)/);
    }
  });

  it('the pure-JS reference conv net has finite, non-zero gradients', function () {
    const reference = convNetGradients('cpu');
    expect(Number.isFinite(reference.loss)).to.equal(true);
    expect(reference.grads).to.have.length(4);
    for (const g of reference.grads) {
      expect(g.every(Number.isFinite)).to.equal(true);
      expect(maxAbs(g), 'a zero gradient would make the comparison below vacuous').to.be.greaterThan(1e-4);
    }
  });

  it('conv net loss and gradients agree with the pure-JS backend', function () {
    if (loadError !== undefined) {
      console.log(`      skipped: tfjs-node is not loadable here (${loadError.split('\n')[0]})`);
      this.skip();
    }
    const reference = convNetGradients('cpu');
    const native = convNetGradients('tensorflow');
    expect(native.loss).to.be.closeTo(reference.loss, 1e-4 * Math.max(1, Math.abs(reference.loss)));
    native.grads.forEach((g, i) => {
      const want = reference.grads[i]!;
      expect(g.length).to.equal(want.length);
      // oneDNN sums in another order than the JS kernels: allow float32 round-off, scaled.
      const tolerance = 1e-4 * Math.max(1e-3, maxAbs(want));
      const worst = g.reduce((m, v, j) => Math.max(m, Math.abs(v - want[j]!)), 0);
      expect(worst, `gradient ${i} differs by ${worst}`).to.be.at.most(tolerance);
    });
  });

  it('a width-4 ResNet-18 trains on odd batches with oneDNN on (the strided 1x1 shortcut kernel is avoided)', async function () {
    if (loadError !== undefined) {
      console.log(`      skipped: tfjs-node is not loadable here, so oneDNN is not in use (${loadError.split('\n')[0]})`);
      this.skip();
    }
    // In a child process: the oneDNN bug corrupts the heap and would abort mocha itself.
    const script = fileURLToPath(new URL('../fixtures/onednn-odd-batch.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: repoRoot,
      env: { ...process.env, TF_ENABLE_ONEDNN_OPTS: '1', TF_CPP_MIN_LOG_LEVEL: '2' },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, s) => resolve([c, s]));
    });
    const why = `exit ${code}, signal ${signal}: ${output.slice(-800)}`;
    expect(code, why).to.equal(0);
    expect(output).to.match(/^ok( \d+\.\d+){6}$/m);
  });
});
