// `audit.encoder: { kind: onnx }` through the pipeline file, the encoder stage's cache key and a
// whole audit in process, with a tiny ONNX model the test writes itself (test/onnx-model.ts).
import { expect } from 'chai';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { auditDataset, type InProcessResult } from '../../activities/in-process.js';
import { StageEngine } from '../../activities/engine.js';
import { readMatrix } from '../../activities/io.js';
import { STAGE_IMPLS } from '../../activities/stages/index.js';
import { parsePipeline } from '../../client/pipeline.js';
import { ArtifactStore } from '../../data/artifacts.js';
import { openDataset } from '../../data/dataset.js';
import type { OnnxEncoderConfig } from '../../ml/config.js';
import type { Pipeline } from '../../workflows/types.js';
import { encodeByHand, writeTinyOnnx } from '../onnx-model.js';
import { tinyImageFolder } from '../temporal-helpers.js';

const WEIGHTS = [
  [1, -0.5, 0],
  [0, 1, -1],
  [0.5, 0.25, 0.25],
];
const BIAS = [0.1, 0, -0.1];
const MEAN = [0.4914, 0.4822, 0.4465]; // CIFAR-10's
const STD = [0.247, 0.243, 0.261];

describe('ONNX encoder in the pipeline (encoder kind onnx)', function () {
  this.timeout(10 * 60_000);
  let dir: string;
  let model: string;
  let pipeline: Pipeline;
  let first: InProcessResult;
  const yamlOf = (encoder: Record<string, unknown>) =>
    stringify({
      name: 'onnx',
      dataset: { format: 'imagefolder', root: 'data', imageSize: 32, name: 'tiny' },
      attack: { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 },
      audit: { seed: 0, encoder, flow: { epochs: 2, batchSize: 8, hidden: 16 }, retrain: false },
      output: 'out',
    });
  const onnx = { kind: 'onnx', path: 'model.onnx', inputSize: 32, mean: MEAN, std: STD, output: 'pooled' };

  before(async function () {
    try {
      await import('onnxruntime-node');
    } catch (err) {
      console.log(`skipped: onnxruntime-node not loadable: ${(err as Error).message.split('\n')[0]}`);
      this.skip();
    }
    dir = await mkdtemp(join(tmpdir(), 'onnx-audit-'));
    await tinyImageFolder(join(dir, 'data'));
    model = join(dir, 'model.onnx');
    await writeTinyOnnx(model, { weights: WEIGHTS, bias: BIAS, inputSize: 32 });
    const file = join(dir, 'audit.yaml');
    pipeline = await parsePipeline(yamlOf(onnx), file);
    first = await auditDataset(pipeline, { store: join(dir, 'store') });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reads the encoder section: path relative to the pipeline file, defaults written out, wrong keys refused', async () => {
    expect(pipeline.audit.encoder).to.deep.equal({ ...onnx, path: model, layout: 'nchw', provider: 'cpu' });
    const refused = async (encoder: Record<string, unknown>) =>
      parsePipeline(yamlOf(encoder), join(dir, 'audit.yaml')).then(
        () => '',
        (e: Error) => e.message,
      );
    expect(await refused({ ...onnx, mean: undefined })).to.match(/audit\.encoder: missing required key "mean"/);
    expect(await refused({ ...onnx, width: 8 })).to.match(/"width" not allowed with kind "onnx"/);
    expect(await refused({ ...onnx, std: [0.2, 0.2] })).to.match(/audit\.encoder\.std: must NOT have fewer than 3 items/);
    expect(await refused({ ...onnx, layout: 'chw' })).to.match(/audit\.encoder\.layout/);
    expect(await refused({ ...onnx, path: 'nowhere.onnx' })).to.match(/audit\.encoder\.path: onnx model not found: .*nowhere\.onnx/);
    expect(await refused({ kind: 'simclr', inputSize: 224 })).to.match(/"inputSize" not allowed with kind "simclr"/);
  });

  it('runs a whole audit whose features are the model’s (known answer), on ONNX Runtime', async () => {
    const features = first.outcomes.features;
    expect(features.info.backend).to.equal('onnxruntime cpu');
    expect(first.report.config.encoder).to.include({ kind: 'onnx', path: model, inputSize: 32 });
    expect(first.outcomes.encoder.info.figure).to.match(/^onnx .*model\.onnx \(sha256 [0-9a-f]{12}\)$/);
    expect(first.report.classes).to.have.length(3);
    const raw = await readMatrix(first.store.dir(features.ref), 'raw');
    const ds = await openDataset(join(first.store.dir(first.outcomes.attack.ref), 'dataset'));
    try {
      expect([raw.rows, raw.cols]).to.deep.equal([ds.size, 3]);
      const want = encodeByHand(await ds.readImages(Int32Array.from({ length: ds.size }, (_, i) => i)), ds.size, 32, {
        weights: WEIGHTS,
        bias: BIAS,
        mean: MEAN,
        std: STD,
      });
      want.forEach((row, i) => row.forEach((v, k) => expect(raw.data[i * 3 + k], `sample ${i} dim ${k}`).to.be.closeTo(v, 1e-4)));
    } finally {
      await ds.close();
    }
  });

  it('can be reused by a later audit (kind reuse): its pointer is copied and unchanged samples keep their rows', async () => {
    const reuse = await parsePipeline(yamlOf({ kind: 'reuse', from: 'previous' }), join(dir, 'audit.yaml'));
    const r = await auditDataset(reuse, { store: join(dir, 'store') });
    expect(r.outcomes.encoder.info.figure).to.match(/^reused encoder [0-9a-f]{12} \(no training\)$/);
    expect(r.outcomes.features.info.featureReuse).to.include({ recomputed: 0, reused: first.cleansed.length });
    expect(r.outcomes.features.info.backend).to.equal('onnxruntime cpu');
    // The default pooled stages are for this project's ResNet: a reused ONNX encoder's features are its output.
    expect(r.outcomes.features.info.warnings).to.deep.equal([
      `audit.features.stages [2, 3, 4] not applied: the encoder onnx encoder ${model} is an ONNX model; its output is the features`,
    ]);
  });

  it("keys the encoder by the model file's sha256: same bytes hit the cache, a changed model does not", async () => {
    const engine = new StageEngine(new ArtifactStore(join(dir, 'store')), STAGE_IMPLS);
    const dataset = first.outcomes.attack.ref;
    const key = (config: OnnxEncoderConfig) =>
      engine.keyOf({ stage: 'encoder', label: 'encoder', params: { kind: 'onnx', config }, inputs: { dataset } });
    const config = pipeline.audit.encoder as OnnxEncoderConfig;
    const before = await key(config);
    expect(before).to.equal(first.outcomes.encoder.ref.key);
    // Rewritten with the same bytes (new mtime): the same key; the rerun is served from the cache.
    await writeTinyOnnx(model, { weights: WEIGHTS, bias: BIAS, inputSize: 32 });
    await utimes(model, new Date(), new Date(Date.now() + 5000));
    expect(await key(config)).to.equal(before);
    const again = await auditDataset(pipeline, { store: join(dir, 'store') });
    expect(again.outcomes.encoder.cached && again.outcomes.features.cached).to.equal(true);
    // One weight changed, same file size: another key, and the features are computed again.
    await writeTinyOnnx(model, {
      weights: [
        [1, -0.5, 0],
        [0, 1, -1],
        [0.5, 0.25, 0.5],
      ],
      bias: BIAS,
      inputSize: 32,
    });
    const changed = await key(config);
    expect(changed).to.not.equal(before);
    // Other preprocessing is another key too (it is in the parameters).
    expect(await key({ ...config, mean: [0.5, 0.5, 0.5] })).to.not.equal(changed);
    const third = await auditDataset(pipeline, { store: join(dir, 'store') });
    expect(third.outcomes.encoder.ref.key).to.equal(changed);
    expect(third.outcomes.features.cached).to.equal(false);
    const raw = await readMatrix(third.store.dir(third.outcomes.features.ref), 'raw');
    const old = await readMatrix(first.store.dir(first.outcomes.features.ref), 'raw');
    expect(Array.from(raw.data.subarray(0, 3))).to.not.deep.equal(Array.from(old.data.subarray(0, 3)));
    // An encoder artifact whose model file has changed since refuses to load (no silent mix).
    await writeFile(model, 'not a model');
    const { loadEncoder } = await import('../../activities/stages/encoder.js');
    const err = await loadEncoder(third.store.dir(third.outcomes.encoder.ref), 32).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/the model file changed since this encoder artifact was made/);
  });
});
