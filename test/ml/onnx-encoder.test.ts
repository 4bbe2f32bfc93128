// The ONNX encoder (ml/onnx-encoder.ts) against a model the test writes itself
// (test/onnx-model.ts): torchvision's preprocessing, ONNX Runtime's output flattened to [N, D],
// and the same features by hand (known answer).
import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageSource } from '../../data/types.js';
import type { OnnxEncoderConfig } from '../../ml/config.js';
import { encodeSamples, mirrorImages } from '../../ml/features.js';
import { loadOnnxEncoder, onnxInput } from '../../ml/onnx-encoder.js';
import { encodeByHand, writeTinyOnnx } from '../onnx-model.js';

const WEIGHTS = [
  [1, 0, 0],
  [0, 1, -1],
  [0.5, 0.25, 0.25],
  [-1, 2, 0],
];
const BIAS = [0.5, 0, -0.1, 0.2];
const MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const STD: [number, number, number] = [0.229, 0.224, 0.225];

/** `n` deterministic size x size RGB images. */
function images(n: number, size: number): ImageSource {
  const bytes = size * size * 3;
  const pixels = Uint8Array.from({ length: n * bytes }, (_, i) => (i * 37 + ((i / 7) | 0) * 11) % 256);
  return {
    classes: ['a'],
    height: size,
    width: size,
    size: n,
    labels: new Int32Array(n),
    ids: Array.from({ length: n }, (_, i) => `img${i}`),
    readImages: async (idx) => {
      const out = new Uint8Array(idx.length * bytes);
      Array.from(idx).forEach((k, j) => out.set(pixels.subarray(k * bytes, (k + 1) * bytes), j * bytes));
      return out;
    },
  };
}

describe('ONNX encoder (ml/onnx-encoder.ts)', function () {
  this.timeout(60_000);
  let dir: string;
  const config = (path: string, o: Partial<OnnxEncoderConfig> = {}): OnnxEncoderConfig => ({
    kind: 'onnx',
    path,
    inputSize: 8,
    mean: MEAN,
    std: STD,
    layout: 'nchw',
    provider: 'cpu',
    ...o,
  });

  before(async function () {
    try {
      await import('onnxruntime-node');
    } catch (err) {
      this.skip(); // onnxruntime-node (optional dependency) did not install here
      console.log(`skipped: onnxruntime-node not loadable: ${(err as Error).message.split('\n')[0]}`);
    }
    dir = await mkdtemp(join(tmpdir(), 'onnx-encoder-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('resizes bilinearly with half-pixel centres (PyTorch align_corners=False) and normalises per channel', () => {
    // 2x2 -> 4x4, one value per pixel in every channel; std 1/255 and mean 0 keep the pixel scale.
    const px = Uint8Array.from([0, 1, 2, 3].flatMap((v) => [v * 10, v * 10, v * 10]));
    const x = onnxInput(px, 1, 2, 2, { inputSize: 4, mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255], layout: 'nchw' });
    const channel0 = Array.from(x.subarray(0, 16), (v) => Math.round(v * 1000) / 1000);
    // torch.nn.functional.interpolate(tensor([[0,10],[20,30]])[None,None], size=4, mode='bilinear', align_corners=False)
    expect(channel0).to.deep.equal([0, 2.5, 7.5, 10, 5, 7.5, 12.5, 15, 15, 17.5, 22.5, 25, 20, 22.5, 27.5, 30]);
    // (p / 255 - mean) / std per channel; NHWC keeps the channels last.
    const nchw = onnxInput(Uint8Array.from([255, 0, 51]), 1, 1, 1, { inputSize: 1, mean: [0.5, 0, 0], std: [0.5, 1, 2], layout: 'nchw' });
    expect(Array.from(nchw, (v) => Math.round(v * 1e4) / 1e4)).to.deep.equal([1, 0, 0.1]);
    const hwc = onnxInput(Uint8Array.from([255, 0, 51]), 1, 1, 1, { inputSize: 2, mean: [0.5, 0, 0], std: [0.5, 1, 2], layout: 'nhwc' });
    expect(Array.from(hwc, (v) => Math.round(v * 1e4) / 1e4)).to.deep.equal([1, 0, 0.1, 1, 0, 0.1, 1, 0, 0.1, 1, 0, 0.1]);
  });

  it('computes the features a hand computation gives (known answer), in batches, flattened to N x D', async () => {
    const file = join(dir, 'tiny.onnx');
    await writeTinyOnnx(file, { weights: WEIGHTS, bias: BIAS, inputSize: 8 });
    const src = images(10, 8);
    const encoder = await loadOnnxEncoder(config(file, { output: 'pooled' }));
    try {
      expect(encoder.provider).to.equal('onnxruntime cpu');
      const batches: number[] = [];
      const f = await encodeSamples(encoder, src, { batchSize: 4, onBatch: (done) => void batches.push(done) });
      expect(batches).to.deep.equal([1, 2, 3]);
      expect([f.rows, f.cols]).to.deep.equal([10, 4]);
      const want = encodeByHand(await src.readImages(Int32Array.from({ length: 10 }, (_, i) => i)), 10, 8, {
        weights: WEIGHTS,
        bias: BIAS,
        mean: MEAN,
        std: STD,
      });
      for (let i = 0; i < 10; i++)
        for (let k = 0; k < 4; k++) expect(f.data[i * 4 + k], `sample ${i} dim ${k}`).to.be.closeTo(want[i][k], 1e-4);
      // The relu must matter (some pre-activations negative), or this would test a linear map only.
      expect(want.flat().some((v) => v > 0)).to.equal(true);
    } finally {
      await encoder.dispose();
    }
  });

  it('takes the first output by default, flattening [N, D, S, S] to N x D*S*S', async () => {
    const file = join(dir, 'tiny.onnx');
    await writeTinyOnnx(file, { weights: WEIGHTS, bias: BIAS, inputSize: 8 });
    const encoder = await loadOnnxEncoder(config(file));
    try {
      const f = await encodeSamples(encoder, images(3, 8), { batchSize: 2 });
      expect([f.rows, f.cols]).to.deep.equal([3, 4 * 8 * 8]);
    } finally {
      await encoder.dispose();
    }
  });

  it('flipAverage averages the rows of each image and its mirror made from the pixels (an ONNX model too)', async () => {
    const file = join(dir, 'tiny.onnx');
    await writeTinyOnnx(file, { weights: WEIGHTS, bias: BIAS, inputSize: 8 });
    const encoder = await loadOnnxEncoder(config(file));
    try {
      const src = images(3, 8);
      const mirrored: ImageSource = { ...src, readImages: async (idx) => mirrorImages(await src.readImages(idx), idx.length, 8, 8) };
      const plain = await encodeSamples(encoder, src, { batchSize: 2 });
      const ofMirror = await encodeSamples(encoder, mirrored, { batchSize: 2 });
      const averaged = await encodeSamples(encoder, src, { batchSize: 2, flipAverage: true });
      averaged.data.forEach((v, i) => expect(v).to.be.closeTo((plain.data[i] + ofMirror.data[i]) / 2, 1e-5));
      // Unpooled maps of these images change under the mirror, so the average is not the plain rows.
      expect(plain.data.some((v, i) => Math.abs(v - ofMirror.data[i]) > 1e-3)).to.equal(true);
    } finally {
      await encoder.dispose();
    }
  });

  it('feeds NHWC models, resizes to inputSize, and pads the last batch of a model exported with a fixed batch', async () => {
    const ref = join(dir, 'ref.onnx');
    const hwc = join(dir, 'nhwc.onnx');
    const fixed = join(dir, 'fixed.onnx');
    await writeTinyOnnx(ref, { weights: WEIGHTS, bias: BIAS, inputSize: 12 });
    await writeTinyOnnx(hwc, { weights: WEIGHTS, bias: BIAS, inputSize: 12, layout: 'nhwc' });
    await writeTinyOnnx(fixed, { weights: WEIGHTS, bias: BIAS, inputSize: 12, fixedBatch: 4 });
    const src = images(7, 8); // 8 px images, the model takes 12
    const run = async (c: OnnxEncoderConfig) => {
      const e = await loadOnnxEncoder(c);
      try {
        return { fixedBatch: e.fixedBatch, f: await encodeSamples(e, src, { batchSize: 3 }) };
      } finally {
        await e.dispose();
      }
    };
    const a = await run(config(ref, { inputSize: 12, output: 'pooled' }));
    const b = await run(config(hwc, { inputSize: 12, output: 'pooled', layout: 'nhwc' }));
    const c = await run(config(fixed, { inputSize: 12, output: 'pooled' }));
    expect(c.fixedBatch).to.equal(4);
    expect([a.f.rows, b.f.rows, c.f.rows]).to.deep.equal([7, 7, 7]);
    for (let i = 0; i < a.f.data.length; i++) {
      expect(b.f.data[i]).to.be.closeTo(a.f.data[i], 1e-5);
      expect(c.f.data[i]).to.be.closeTo(a.f.data[i], 1e-5);
    }
    // Against the hand computation on the resized input.
    const resized = onnxInput(await src.readImages([0]), 1, 8, 8, { inputSize: 12, mean: MEAN, std: STD, layout: 'nchw' });
    let pooled0 = 0;
    for (let p = 0; p < 144; p++) pooled0 += Math.max(0, resized[p] * WEIGHTS[0][0] + BIAS[0]);
    expect(a.f.data[0]).to.be.closeTo(pooled0 / 144, 1e-4);
  });

  it('refuses a wrong input size, an unknown output, a changed file, and says when CUDA is not there', async () => {
    const file = join(dir, 'tiny.onnx');
    await writeTinyOnnx(file, { weights: WEIGHTS, bias: BIAS, inputSize: 8 });
    await expectReject(
      loadOnnxEncoder(config(file, { inputSize: 16 })),
      /input 'images' is \[N, 3, 8, 8\]; with layout nchw and inputSize 16 it must be \[N, 3, 16, 16\]/,
    );
    await expectReject(loadOnnxEncoder(config(file, { layout: 'nhwc' })), /with layout nhwc/);
    await expectReject(
      loadOnnxEncoder(config(file, { output: 'logits' })),
      /no output named 'logits'; the model's outputs are spatial, pooled/,
    );
    await expectReject(loadOnnxEncoder(config(file), '0'.repeat(64)), /the model file changed since this encoder artifact was made/);
    await expectReject(loadOnnxEncoder(config(join(dir, 'missing.onnx'))), /missing\.onnx: cannot read the model: ENOENT/);
    // CUDA asked for: used where its provider libraries load, else CPU with the reason.
    const e = await loadOnnxEncoder(config(file, { provider: 'cuda' }));
    try {
      if (e.fallback) {
        expect(e.provider).to.equal('onnxruntime cpu');
        expect(e.fallback).to.match(/CUDA execution provider not available .*; running on CPU/);
      } else expect(e.provider).to.equal('onnxruntime cuda');
      expect((await encodeSamples(e, images(2, 8), {})).rows).to.equal(2);
    } finally {
      await e.dispose();
    }
  });
});

async function expectReject(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a rejection matching ${pattern}`).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(pattern);
}
