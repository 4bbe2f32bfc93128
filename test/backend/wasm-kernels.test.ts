import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmKernels, wasmTrainingKernels } from '../../backend/wasm-kernels.js';
import { simclrAugment } from '../../ml/augment.js';
import { trainableVariables } from '../../ml/loop.js';
import { Rng } from '../../ml/random.js';
import { buildResNet18, featureDim } from '../../ml/resnet.js';
import { buildProjectionHead, ntXentLoss } from '../../ml/simclr.js';

type Shape4 = [number, number, number, number];

const rng = new Rng(20240611);
const normal = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
const size = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** Runs `f` on the cpu and the wasm backend; returns both results as flat arrays. */
async function onBoth(f: () => tf.Tensor | tf.Tensor[]): Promise<{ cpu: Float32Array[]; wasm: Float32Array[] }> {
  const out: Record<string, Float32Array[]> = {};
  for (const backend of ['cpu', 'wasm']) {
    await tf.setBackend(backend);
    const result = tf.tidy(f);
    const list = Array.isArray(result) ? result : [result];
    out[backend] = list.map((t) => Float32Array.from(t.dataSync()));
    tf.dispose(list);
  }
  return { cpu: out['cpu']!, wasm: out['wasm']! };
}

/** max |a - b| / max |a| over all arrays (the cpu result is the reference). */
function relativeDiff(ref: Float32Array[], got: Float32Array[]): number {
  expect(got.map((g) => g.length)).to.deep.equal(ref.map((r) => r.length));
  let diff = 0;
  let scale = 0;
  ref.forEach((r, i) => {
    r.forEach((v, j) => {
      diff = Math.max(diff, Math.abs(v - got[i]![j]!));
      scale = Math.max(scale, Math.abs(v));
    });
  });
  return diff / (scale || 1);
}

async function expectSameOnBoth(f: () => tf.Tensor | tf.Tensor[], tolerance = 1e-4): Promise<void> {
  const { cpu, wasm } = await onBoth(f);
  expect(relativeDiff(cpu, wasm)).to.be.below(tolerance);
}

function convOutShape(xShape: Shape4, filterShape: Shape4, strides: number, pad: 'same' | 'valid' | number): Shape4 {
  const info = tf.backend_util.computeConv2DInfo(xShape, filterShape, strides, 1, pad);
  return info.outShape as Shape4;
}

describe('wasm training kernels', function () {
  let previous: string;

  before(async function () {
    previous = tf.getBackend() ?? 'cpu';
    registerWasmKernels();
    registerWasmKernels(); // idempotent: a second call must not throw on re-registration
    await tf.setBackend('wasm');
  });

  after(async function () {
    await tf.setBackend(previous);
  });

  it('registers every listed kernel on the wasm backend', function () {
    for (const name of Object.keys(wasmTrainingKernels)) {
      expect(tf.getKernel(name, 'wasm'), name).to.not.equal(undefined);
    }
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).to.not.equal(undefined);
  });

  // [x shape, filter shape, stride, padding]: stride 1 and 2, 3x3 and 1x1, same/valid/explicit
  // padding, odd sizes (asymmetric 'same' padding), a non-square filter, the 3-channel stem, and
  // a batch that spans several filter-gradient chunks (1024 output pixels each).
  const convCases: [Shape4, Shape4, number, 'same' | 'valid' | number][] = [
    [[2, 8, 8, 3], [3, 3, 3, 5], 1, 'same'],
    [[2, 8, 8, 4], [3, 3, 4, 6], 2, 'same'],
    [[2, 7, 7, 4], [3, 3, 4, 6], 2, 'same'],
    [[2, 8, 8, 8], [1, 1, 8, 6], 2, 'valid'],
    [[2, 8, 8, 8], [1, 1, 8, 6], 1, 'valid'],
    [[2, 9, 9, 4], [3, 3, 4, 6], 1, 'valid'],
    [[2, 9, 9, 20], [3, 3, 20, 6], 2, 1],
    [[3, 6, 5, 4], [2, 3, 4, 3], 1, 'same'],
    [[9, 16, 16, 16], [3, 3, 16, 8], 1, 'same'],
  ];

  for (const [xShape, fShape, strides, pad] of convCases) {
    const tag = `x [${xShape}] filter [${fShape}] stride ${strides} pad ${pad}`;
    const yShape = convOutShape(xShape, fShape, strides, pad);

    it(`Conv2DBackpropFilter matches cpu: ${tag}`, async function () {
      const x = normal(size(xShape));
      const dy = normal(size(yShape));
      await expectSameOnBoth(
        () =>
          tf
            .engine()
            .runKernel(
              'Conv2DBackpropFilter',
              { x: tf.tensor4d(x, xShape), dy: tf.tensor4d(dy, yShape) },
              { strides, pad, dataFormat: 'NHWC', filterShape: fShape },
            ) as tf.Tensor,
      );
    });

    it(`Conv2DBackpropInput matches cpu: ${tag}`, async function () {
      const w = normal(size(fShape));
      const dy = normal(size(yShape));
      await expectSameOnBoth(
        () =>
          tf
            .engine()
            .runKernel(
              'Conv2DBackpropInput',
              { dy: tf.tensor4d(dy, yShape), filter: tf.tensor4d(w, fShape) },
              { strides, pad, dataFormat: 'NHWC', inputShape: xShape },
            ) as tf.Tensor,
      );
    });
  }

  it('conv2d gradients through tf.grads match cpu', async function () {
    const x = normal(2 * 10 * 10 * 6);
    const w = normal(3 * 3 * 6 * 7);
    await expectSameOnBoth(() => {
      const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same')));
      return tf.grads(loss)([tf.tensor4d(x, [2, 10, 10, 6]), tf.tensor4d(w, [3, 3, 6, 7])]);
    });
  });

  it('rejects dilated or NCHW convolution gradients with a clear error', async function () {
    const x = tf.zeros([1, 4, 4, 2]);
    const dy = tf.zeros([1, 2, 2, 2]);
    expect(() =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'valid', dataFormat: 'NCHW', filterShape: [3, 3, 2, 2] }),
    ).to.throw(/NHWC/);
    tf.dispose([x, dy]);
  });

  for (const [transposeA, transposeB] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const) {
    it(`matMul transposeA=${transposeA} transposeB=${transposeB} matches cpu (rank 2, rank 3, fused)`, async function () {
      const [m, k, n] = [70, 90, 50];
      const a = normal(m * k);
      const b = normal(k * n);
      const bias = normal(n);
      const aShape: [number, number] = transposeA ? [k, m] : [m, k];
      const bShape: [number, number] = transposeB ? [n, k] : [k, n];
      const { cpu, wasm } = await onBoth(() => [
        tf.matMul(tf.tensor(a, aShape), tf.tensor(b, bShape), transposeA, transposeB),
        tf.matMul(tf.tensor(a, [1, ...aShape]), tf.tensor(b, [1, ...bShape]), transposeA, transposeB),
        tf.fused.matMul({
          a: tf.tensor(a, aShape) as tf.Tensor2D,
          b: tf.tensor(b, bShape) as tf.Tensor2D,
          transposeA,
          transposeB,
          bias: tf.tensor1d(bias),
          activation: 'relu',
        }),
      ]);
      expect(relativeDiff(cpu, wasm)).to.be.below(1e-4);
      // The rank-3 product keeps its unit batch dimension.
      await tf.setBackend('wasm');
      const shape = tf.tidy(() => tf.matMul(tf.zeros([1, ...aShape]), tf.zeros([1, ...bShape]), transposeA, transposeB).shape);
      expect(shape).to.deep.equal([1, m, n]);
    });
  }

  it('frees every scratch buffer it allocates on the wasm heap', async function () {
    await tf.setBackend('wasm');
    const backend = tf.backend() as tf.KernelBackend & { numDataIds(): number };
    const x = tf.tensor4d(normal(3 * 8 * 8 * 4), [3, 8, 8, 4]);
    const w = tf.tensor4d(normal(3 * 3 * 4 * 5), [3, 3, 4, 5]);
    const a = tf.tensor2d(normal(40 * 30), [40, 30]);
    const before = backend.numDataIds();
    for (let i = 0; i < 2; i++) {
      tf.tidy(() => {
        const f = (p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.square(tf.conv2d(p as tf.Tensor4D, q as tf.Tensor4D, i + 1, 'same')));
        tf.grads(f)([x, w]).forEach((g) => g.dataSync());
        tf.matMul(a, a, true, false).dataSync();
        tf.fused.matMul({ a, b: a, transposeB: true, bias: tf.zeros([40]) }).dataSync();
        tf.tile(tf.zeros([1, 1, 1, 4]), [2, 3, 3, 1]).dataSync();
        tf.sum(x, [0, 1, 2]).dataSync();
        tf.grad((p: tf.Tensor) => tf.sum(tf.avgPool(tf.maxPool(p as tf.Tensor4D, 3, 2, 'same'), 1, 2, 'valid')))(x).dataSync();
      });
    }
    expect(backend.numDataIds()).to.equal(before);
    tf.dispose([x, w, a]);
  });

  it('Tile, Sum and Mean match cpu on batch-norm patterns and on the general case', async function () {
    const v = normal(5);
    const x = normal(3 * 4 * 6 * 5);
    await expectSameOnBoth(() => {
      const vt = tf.tensor4d(v, [1, 1, 1, 5]);
      const xt = tf.tensor4d(x, [3, 4, 6, 5]);
      return [
        tf.tile(vt, [3, 4, 6, 1]),
        tf.tile(xt, [2, 1, 1, 2]), // general case, handled by the original kernel
        tf.sum(xt, [0, 1, 2]),
        tf.sum(xt, [0, 1, 2], true),
        tf.mean(xt, [0, 1, 2]),
        tf.mean(xt, [1, 0]),
        tf.sum(xt, [1, 2]), // not leading axes
        tf.sum(xt),
        tf.mean(xt, -1),
      ];
    });
  });

  it('UnsortedSegmentSum (the gradient of gather) matches cpu and drops out-of-range ids', async function () {
    const x = normal(6 * 4);
    await expectSameOnBoth(() => [
      tf.unsortedSegmentSum(tf.tensor2d(x, [6, 4]), tf.tensor1d([0, 2, 2, 1, 0, 2], 'int32'), 3),
      tf.grad((t: tf.Tensor) => tf.sum(tf.square(tf.gather(t, tf.tensor1d([5, 0, 0, 3], 'int32')))))(tf.tensor2d(x, [6, 4])),
    ]);
    await tf.setBackend('wasm');
    const dropped = tf.tidy(() => tf.unsortedSegmentSum(tf.tensor1d([1, 2, 4]), tf.tensor1d([0, -1, 5], 'int32'), 2).dataSync());
    expect(Array.from(dropped)).to.deep.equal([1, 0]);
  });

  it('Einsum (rgbToGrayscale) and depthwise convolution gradients run on wasm via cpu', async function () {
    const img = Float32Array.from({ length: 2 * 3 * 3 * 3 }, () => rng.next());
    const x = normal(2 * 6 * 6 * 3);
    const w = normal(3 * 3 * 3 * 2);
    await expectSameOnBoth(() => [
      tf.image.rgbToGrayscale(tf.tensor4d(img, [2, 3, 3, 3])),
      ...tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'))))([
        tf.tensor4d(x, [2, 6, 6, 3]),
        tf.tensor4d(w, [3, 3, 3, 2]),
      ]),
    ]);
  });

  // [x shape, window, stride, padding]: 1 and several channels, batch 1 and 3, the ImageNet stem's
  // 3x3/2 'same' pool (odd and even sizes), 2x2/2 'valid', the projection shortcut's 1x1/2
  // subsample and a 3x3/1 'same' pool (every pixel in up to 9 windows).
  const poolCases: [Shape4, number, number, 'same' | 'valid'][] = [
    [[1, 8, 8, 1], 3, 2, 'same'],
    [[1, 8, 8, 2], 3, 2, 'same'],
    [[3, 9, 9, 3], 3, 2, 'same'],
    [[3, 8, 8, 1], 2, 2, 'valid'],
    [[1, 8, 8, 4], 2, 2, 'valid'],
    [[1, 7, 7, 1], 1, 2, 'valid'],
    [[3, 8, 8, 1], 1, 2, 'valid'],
    [[3, 7, 7, 5], 1, 2, 'valid'],
    [[1, 6, 6, 1], 3, 1, 'same'],
    [[3, 7, 7, 4], 3, 1, 'same'],
  ];

  /** max |cpu - wasm| over all arrays; NaN where one side is NaN and the other is not. */
  async function maxAbsDiff(f: () => tf.Tensor | tf.Tensor[]): Promise<number> {
    const { cpu, wasm } = await onBoth(f);
    let diff = 0;
    cpu.forEach((r, i) =>
      r.forEach((v, j) => (diff = Math.max(diff, Number.isNaN(v) ? (Number.isNaN(wasm[i]![j]!) ? 0 : NaN) : Math.abs(v - wasm[i]![j]!)))),
    );
    return diff;
  }

  for (const [xShape, window, strides, pad] of poolCases) {
    const tag = `x [${xShape}] ${window}x${window} stride ${strides} ${pad}`;
    const yShape = tf.backend_util.computePool2DInfo(xShape, window, strides, 1, pad).outShape;

    it(`MaxPoolGrad equals cpu bit for bit: ${tag}`, async function () {
      const distinct = normal(size(xShape));
      // Post-ReLU-like integers: many windows hold ties, which must go to the same pixel as on cpu.
      const tied = distinct.map((v) => Math.max(0, Math.round(v)));
      const dy = normal(size(yShape));
      const diff = await maxAbsDiff(() =>
        [distinct, tied].map((x) => {
          const input = tf.tensor4d(x, xShape);
          const output = tf.maxPool(input, window, strides, pad);
          return tf
            .engine()
            .runKernel('MaxPoolGrad', { dy: tf.tensor4d(dy, yShape), input, output }, { filterSize: window, strides, pad }) as tf.Tensor;
        }),
      );
      expect(diff).to.equal(0);
    });

    it(`AvgPoolGrad matches cpu: ${tag}`, async function () {
      const dy = normal(size(yShape));
      await expectSameOnBoth(
        () =>
          tf
            .engine()
            .runKernel(
              'AvgPoolGrad',
              { dy: tf.tensor4d(dy, yShape), input: tf.zeros(xShape) },
              { filterSize: window, strides, pad },
            ) as tf.Tensor,
        1e-6,
      );
    });
  }

  it('MaxPoolGrad sends each gradient to the first largest pixel of its window (known answer)', async function () {
    await tf.setBackend('wasm');
    // Channel 0 ties at 3 on pixels 0, 1 and 3 (the first wins); channel 1's maximum is pixel 3.
    const dx = tf.tidy(() => {
      const input = tf.tensor4d([3, 4, 3, 2, 2, 1, 3, 5], [1, 2, 2, 2]);
      const output = tf.maxPool(input, 2, 2, 'valid');
      const dy = tf.tensor4d([10, 20], [1, 1, 1, 2]);
      return (
        tf.engine().runKernel('MaxPoolGrad', { dy, input, output }, { filterSize: 2, strides: 2, pad: 'valid' }) as tf.Tensor
      ).dataSync();
    });
    expect(Array.from(dx)).to.deep.equal([10, 0, 0, 0, 0, 0, 0, 20]);
  });

  it('MaxPoolGrad honours explicit padding with dimRoundingMode like cpu', async function () {
    const xShape: Shape4 = [2, 8, 8, 3];
    const x = normal(size(xShape));
    const diff = await maxAbsDiff(() => {
      const input = tf.tensor4d(x, xShape);
      const output = tf.maxPool(input, 3, 2, 1, 'ceil');
      const dy = tf.reshape(tf.range(1, size(output.shape) + 1), output.shape);
      return tf
        .engine()
        .runKernel('MaxPoolGrad', { dy, input, output }, { filterSize: 3, strides: 2, pad: 1, dimRoundingMode: 'ceil' }) as tf.Tensor;
    });
    expect(diff).to.equal(0);
  });

  it('maxPool and avgPool gradients through tf.grads match cpu (stem pool, projection subsample)', async function () {
    // Signed inputs: the stock wasm kernel is only wrong where a window's maximum is not positive.
    const x = normal(3 * 11 * 11 * 6);
    const { cpu, wasm } = await onBoth(() => {
      const loss = (t: tf.Tensor) => {
        const stem = tf.maxPool(t as tf.Tensor4D, 3, 2, 'same');
        const sub = tf.avgPool(stem, 1, 2, 'valid');
        return tf.add(tf.sum(tf.square(stem)), tf.sum(tf.mul(sub, sub)));
      };
      const { value, grad } = tf.valueAndGrad(loss)(tf.tensor4d(x, [3, 11, 11, 6]));
      return [value, grad];
    });
    expect(relativeDiff([cpu[0]!], [wasm[0]!])).to.be.below(1e-5); // a sum of ~300 squares
    expect(relativeDiff([cpu[1]!], [wasm[1]!])).to.be.below(1e-6); // element-wise ops and the pool gradients
    expect(wasm[1]!.some((g) => g !== 0)).to.equal(true);
  });

  // The ImageNet stem adds the 3x3/2 max pool (after a ReLU, which hides the stock wasm kernel's
  // errors, so the pool tests above are the ones that catch them); both stems have 1x1/2
  // average-pool shortcuts.
  for (const stem of ['cifar', 'imagenet'] as const) {
    it(`a SimCLR step of the real ResNet-18 (${stem} stem) gives the same loss and gradients as cpu`, async function () {
      const n = 3;
      const pixels = Float32Array.from({ length: n * 16 * 16 * 3 }, () => rng.next());
      const results: { loss: number; grads: Float32Array[] }[] = [];
      for (const backend of ['cpu', 'wasm']) {
        await tf.setBackend(backend);
        const encoder = buildResNet18({ stem, width: 4, inputSize: 16, seed: 7 });
        const head = buildProjectionHead(featureDim(4), 8, 8);
        const vars = trainableVariables([...encoder.trainableWeights, ...head.trainableWeights]);
        const augmentRng = new Rng(9);
        results.push(
          tf.tidy(() => {
            const x = tf.tensor4d(pixels, [n, 16, 16, 3]);
            const views = tf.concat([simclrAugment(x, augmentRng), simclrAugment(x, augmentRng)], 0);
            const { value, grads } = tf.variableGrads(() => {
              const z = head.apply(encoder.apply(views, { training: true }) as tf.Tensor, { training: true }) as tf.Tensor2D;
              const [z1, z2] = tf.split(z, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
              return ntXentLoss(z1, z2, 0.5);
            }, vars);
            return { loss: value.dataSync()[0]!, grads: vars.map((v) => Float32Array.from(grads[v.name]!.dataSync())) };
          }),
        );
        encoder.dispose();
        head.dispose();
      }
      const [cpu, wasm] = results as [(typeof results)[0], (typeof results)[0]];
      expect(wasm.loss).to.be.closeTo(cpu.loss, 1e-4 * Math.abs(cpu.loss));
      expect(wasm.grads.length).to.equal(cpu.grads.length);
      // Per variable, so a small gradient is not hidden behind a large one.
      cpu.grads.forEach((g, i) => expect(relativeDiff([g], [wasm.grads[i]!]), `variable ${i}`).to.be.below(1e-3));
    });
  }
});
