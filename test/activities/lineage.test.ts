// Encoder lineage across audits of one pipeline (issue 11): `warmStart: previous` continues the
// encoder of the audit whose report.json is in the output folder, `kind: reuse` keeps the
// previous features of unchanged samples. Real parts, small: CIFAR-10 images, SimCLR width 4,
// the in-process executor (the same DAG and stage engine as the Temporal workflow).
import { expect } from 'chai';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { stringify } from 'yaml';
import { auditDataset, type InProcessResult } from '../../activities/in-process.js';
import { readMatrix } from '../../activities/io.js';
import { selectBackend } from '../../backend/backend.js';
import { parsePipeline } from '../../client/pipeline.js';
import { openDataset } from '../../data/dataset.js';
import type { SimclrEncoderConfig } from '../../ml/config.js';
import type { AuditReport } from '../../ml/audit-report.js';
import { loadModel, saveModel } from '../../ml/model-io.js';
import { readWarmStart, trainSimclr } from '../../ml/simclr.js';
import type { Pipeline } from '../../workflows/types.js';
import { cifarSubset, type Subset } from '../cifar-subset.js';
import { tinyImageFolder } from '../temporal-helpers.js';

const bytes = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).buffer).toString('base64');

/** Every weight of the encoder an artifact holds, as bytes. */
async function encoderBytes(r: InProcessResult): Promise<string[]> {
  const model = await loadModel(join(r.store.dir(r.outcomes.encoder.ref), 'model'));
  try {
    return model.getWeights().map(bytes);
  } finally {
    model.dispose();
  }
}

describe('warm start (ml): parent E epochs + child 1 epoch = one run of E + 1 epochs', function () {
  this.timeout(5 * 60_000);
  let subset: Subset;
  let dir: string;
  const cfg: SimclrEncoderConfig = {
    kind: 'simclr',
    width: 4,
    stem: 'cifar',
    epochs: 2,
    batchSize: 10,
    lr: 1e-3,
    temperature: 0.5,
    projectionDim: 8,
  };
  before(async () => {
    await selectBackend('auto', 'training', () => {});
    subset = await cifarSubset(2, 16);
    dir = await mkdtemp(join(tmpdir(), 'warm-start-'));
  });
  after(async () => {
    await subset?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('continues weights, head, Adam state and data order exactly; the weights-only start keeps the backbone', async () => {
    const parent = await trainSimclr(subset.source, cfg, 3, { checkpointDir: join(dir, 'parent') });
    const straight = await trainSimclr(subset.source, { ...cfg, epochs: 3 }, 3, { checkpointDir: join(dir, 'straight') });
    // The parent's final checkpoint is what an encoder artifact with warmStart keeps in `state/`.
    const warm = await readWarmStart('p'.repeat(64), join(dir, 'none'), join(dir, 'parent'));
    const child = await trainSimclr(subset.source, { ...cfg, epochs: 1 }, 3, { checkpointDir: join(dir, 'child') }, warm);
    tf.dispose([...warm.weights, ...(warm.state?.optimizer.slots ?? [])]);
    expect(child.warmStartRefused).to.equal(undefined);
    const a = straight.encoder.getWeights();
    const b = child.encoder.getWeights();
    expect(b.map(bytes)).to.deep.equal(a.map(bytes));
    expect(child.losses).to.deep.equal([straight.losses[2]]);

    // Without the training state (a parent trained without warmStart): the backbone only.
    await mkdir(join(dir, 'model'));
    await saveModel(parent.encoder, join(dir, 'model'));
    const weightsOnly = await readWarmStart('q'.repeat(64), join(dir, 'model'));
    expect(weightsOnly.state).to.equal(undefined);
    expect(weightsOnly.weights.map(bytes)).to.deep.equal(parent.encoder.getWeights().map(bytes));
    // Another width does not fit: refused before any epoch, trained from scratch.
    const other = await trainSimclr(subset.source, { ...cfg, width: 8, epochs: 1 }, 3, undefined, weightsOnly);
    expect(other.warmStartRefused).to.match(/^parent encoder q{12} does not fit this model \(weight \d+ has shape/);
    tf.dispose(weightsOnly.weights);
    [parent, straight, child, other].forEach((r) => r.encoder.dispose());
  });
});

describe('encoder lineage across audits (in process)', function () {
  this.timeout(20 * 60_000);
  let dir: string;
  let root: string;
  let logs: string[];
  const store = () => join(dir, 'store');
  const output = () => join(dir, 'out');

  /** An audit of `root` without attack, written to the one output folder, with this encoder section. */
  async function pipeline(encoder: Record<string, unknown>, out = output()): Promise<Pipeline> {
    const file = join(dir, 'audit.yaml');
    const yaml = stringify({
      name: 'nightly',
      dataset: { format: 'imagefolder', root, imageSize: 32, name: 'tiny' },
      audit: { seed: 5, backend: 'auto', encoder, flow: { epochs: 1, batchSize: 8, hidden: 8 }, retrain: false },
      output: out,
    });
    await writeFile(file, yaml);
    return parsePipeline(yaml, file);
  }
  const simclr = { kind: 'simclr', width: 4, batchSize: 12, projectionDim: 8 };
  const run = async (p: Pipeline) => {
    logs = [];
    return auditDataset(p, { store: store(), log: (l) => logs.push(l) });
  };
  const reportOf = async (): Promise<AuditReport> => JSON.parse(await readFile(join(output(), 'report.json'), 'utf8')) as AuditReport;

  before(async () => {
    await selectBackend('auto', 'training', () => {});
    dir = await mkdtemp(join(tmpdir(), 'lineage-'));
    root = await tinyImageFolder(join(dir, 'data'), 3, 13);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the settings from the pipeline file, refusing keys a kind does not take', async () => {
    expect((await pipeline({ kind: 'reuse', from: 'previous' })).audit.encoder).to.deep.equal({ kind: 'reuse', from: 'previous' });
    expect((await pipeline({ ...simclr, warmStart: 'previous' })).audit.encoder).to.include({ kind: 'simclr', warmStart: 'previous' });
    const refused = async (encoder: Record<string, unknown>) =>
      pipeline(encoder).then(
        () => '',
        (e: Error) => e.message,
      );
    expect(await refused({ kind: 'reuse', from: 'previous', width: 8 })).to.match(/audit\.encoder: "width" not allowed with kind "reuse"/);
    expect(await refused({ kind: 'reuse' })).to.match(/audit\.encoder: missing required key "from"/);
    expect(await refused({ kind: 'reuse', from: 'yesterday' })).to.match(/audit\.encoder\.from: must match pattern/);
    expect(await refused({ kind: 'pretrained', path: dir, warmStart: 'previous' })).to.match(
      /"warmStart" not allowed with kind "pretrained"/,
    );
  });

  it('refuses a reuse with nothing to reuse, saying why', async () => {
    let err: Error | undefined;
    await run(await pipeline({ kind: 'reuse', from: 'previous' }, join(dir, 'empty'))).catch((e: Error) => (err = e));
    expect(err?.name).to.equal('PipelineInputError');
    expect(err?.message).to.equal(
      `encoder.kind reuse (from previous): no encoder to reuse: no previous audit (no report.json in ${join(dir, 'empty')})`,
    );
  });

  let night1: InProcessResult;
  let night1Report: string;
  it('night 1 has no parent: it trains from scratch and says why', async () => {
    night1 = await run(await pipeline({ ...simclr, epochs: 2, warmStart: 'previous' }));
    expect(logs).to.include(`encoder: no parent encoder: no previous audit (no report.json in ${output()}); training from scratch`);
    const report = await reportOf();
    expect(report.lineage).to.deep.equal({
      parentEncoder: null,
      cumulativeEpochs: 2,
      reason: `no previous audit (no report.json in ${output()})`,
    });
    expect(report.artifacts?.lineage).to.be.a('string');
    night1Report = await readFile(join(output(), 'report.json'), 'utf8');
  });

  let night2: InProcessResult;
  it('night 2 continues night 1: same weights as one run of 3 epochs, parent and cumulative epochs in report.json', async () => {
    night2 = await run(await pipeline({ ...simclr, epochs: 1, warmStart: 'previous' }));
    const parentKey = night1.outcomes.encoder.ref.key;
    expect(
      logs.some((l) => l.includes(`encoder: warm start from encoder ${parentKey.slice(0, 12)} (2 epochs so far, with its optimizer`)),
    ).to.equal(true);
    const report = await reportOf();
    expect(report.lineage).to.deep.equal({ parentEncoder: parentKey, cumulativeEpochs: 3 });
    // The reference: the same data, seed and config, 3 epochs in one run (another output folder, no lineage).
    const straight = await run(await pipeline({ ...simclr, epochs: 3 }, join(dir, 'straight')));
    expect(await encoderBytes(night2)).to.deep.equal(await encoderBytes(straight));
  });

  it('a rerun with the same parent is a cache hit (encoder and features), through a lineage stage that always runs', async () => {
    const night2Report = await readFile(join(output(), 'report.json'), 'utf8');
    await writeFile(join(output(), 'report.json'), night1Report); // as before night 2's report was written
    const again = await run(await pipeline({ ...simclr, epochs: 1, warmStart: 'previous' }));
    expect(again.outcomes.lineage.cached).to.equal(false); // resolved again, not looked up
    expect(again.outcomes.lineage.ref.key).to.equal(night2.outcomes.lineage.ref.key);
    expect(again.outcomes.encoder.cached).to.equal(true);
    expect(again.outcomes.encoder.ref.key).to.equal(night2.outcomes.encoder.ref.key);
    expect(again.outcomes.features.cached).to.equal(true);
    await writeFile(join(output(), 'report.json'), night2Report);
  });

  it('a corrupted or missing parent falls back to training from scratch with the reason', async () => {
    await writeFile(join(output(), 'report.json'), night1Report); // night 1's encoder is the parent
    const parentKey = night1.outcomes.encoder.ref.key;
    const parentDir = night1.store.dir(parentKey);
    const weights = (await readdir(join(parentDir, 'model'))).find((f) => f.endsWith('.bin')) as string;
    await writeFile(join(parentDir, 'model', weights), Buffer.alloc(16, 7)); // bytes changed on disk
    await run(await pipeline({ ...simclr, epochs: 1, warmStart: 'previous' }));
    const corrupted = `encoder artifact ${parentKey.slice(0, 12)} failed its hash check (corrupted; moved to quarantine)`;
    expect(logs).to.include(`encoder: no parent encoder: ${corrupted}; training from scratch`);
    expect((await reportOf()).lineage).to.deep.equal({ parentEncoder: null, cumulativeEpochs: 1, reason: corrupted });

    // Missing: a report.json naming an encoder this store never had.
    const report = JSON.parse(night1Report) as AuditReport;
    const ghost = 'f'.repeat(64);
    await writeFile(join(output(), 'report.json'), JSON.stringify({ ...report, artifacts: { ...report.artifacts, encoder: ghost } }));
    await run(await pipeline({ ...simclr, epochs: 1, warmStart: 'previous' }));
    const missing = `encoder artifact ${ghost.slice(0, 12)} is not in the store ${store()}`;
    expect(logs).to.include(`encoder: no parent encoder: ${missing}; training from scratch`);
    expect((await reportOf()).lineage?.reason).to.equal(missing);
  });

  it('reuse recomputes features only for new or changed samples; unchanged rows are the previous ones', async () => {
    // Night A: 12 images per class (the 13th of two classes held back), a plain SimCLR audit.
    const classes = (await readdir(root)).sort();
    const held: [string, string][] = [];
    for (const c of classes.slice(0, 2)) {
      const last = (await readdir(join(root, c))).sort().at(-1) as string;
      held.push([join(root, c, last), join(dir, `held-${c}-${last}`)]);
    }
    for (const [from, to] of held) await rename(from, to);
    await rm(join(root, classes[2], (await readdir(join(root, classes[2]))).sort().at(-1) as string));
    const a = await run(await pipeline({ ...simclr, epochs: 1 }));
    // Night B: the two held-back images are added, one image changes in place.
    for (const [to, from] of held) await rename(from, to);
    const changed = join(root, classes[1], (await readdir(join(root, classes[1]))).sort()[0]);
    const other = join(root, classes[2], (await readdir(join(root, classes[2]))).sort()[0]);
    await copyFile(other, changed);
    const b = await run(await pipeline({ kind: 'reuse', from: 'previous' }));

    expect(b.outcomes.encoder.info.figure).to.match(/^reused encoder/);
    expect(b.outcomes.features.info.featureReuse).to.deep.equal({ recomputed: 3, reused: 35, from: a.outcomes.features.ref.key });
    expect(logs).to.include(
      `features: 3 of 38 samples through the encoder (new or changed content), 35 rows reused from features ${a.outcomes.features.ref.key.slice(0, 12)}`,
    );
    const report = await reportOf();
    expect(report.lineage).to.deep.equal({
      parentEncoder: a.outcomes.encoder.ref.key,
      cumulativeEpochs: 1,
      features: { recomputed: 3, reused: 35, from: a.outcomes.features.ref.key },
    });

    // Row by row: unchanged samples carry night A's raw rows exactly; the three others are new.
    const rows = async (r: InProcessResult) => {
      const raw = await readMatrix(r.store.dir(r.outcomes.features.ref), 'raw');
      const ds = await openDataset(join(r.store.dir(r.outcomes.ingest.ref), 'dataset'));
      const row = (i: number) => Buffer.from(raw.data.buffer, i * raw.cols * 4, raw.cols * 4).toString('hex');
      const byId = new Map(ds.ids.map((id, i) => [id, row(i)]));
      await ds.close();
      return byId;
    };
    const before = await rows(a);
    const after = await rows(b);
    const changedId = `${classes[1]}/${changed.split('/').at(-1)}`;
    const fresh = [...after.keys()].filter((id) => !before.has(id) || id === changedId);
    expect(fresh).to.have.length(3);
    for (const [id, row] of after) if (!fresh.includes(id)) expect(row, id).to.equal(before.get(id));
    expect(after.get(changedId)).to.not.equal(before.get(changedId));

    // The same reuse again: every stage from the cache.
    await writeFile(join(output(), 'report.json'), JSON.stringify(a.report)); // night A's again, as before B finished
    const c = await run(await pipeline({ kind: 'reuse', from: 'previous' }));
    expect(c.outcomes.encoder.cached && c.outcomes.features.cached).to.equal(true);
  });

  it('a reuse that pools other encoder stages recomputes every row, saying why', async () => {
    const reuse = await pipeline({ kind: 'reuse', from: 'previous' });
    const r = await run({ ...reuse, audit: { ...reuse.audit, features: { ...reuse.audit.features, stages: [3, 4] } } });
    // Width 4: stages 2, 3 and 4 have 8, 16 and 32 channels (the previous features, the default, pool all three).
    expect(logs).to.include(
      'features: every sample goes through the encoder: previous features have 56 columns, these 48 (audit.features.stages changed)',
    );
    expect(r.outcomes.features.info.featureReuse).to.deep.equal({ recomputed: 38, reused: 0, from: null });
  });

  it('a reuse that averages in the mirror recomputes every row, saying why', async () => {
    const reuse = await pipeline({ kind: 'reuse', from: 'previous' });
    const averaged = { ...reuse, audit: { ...reuse.audit, features: { ...reuse.audit.features, flipAverage: true } } };
    const r = await run(averaged);
    expect(logs).to.include(
      'features: every sample goes through the encoder: previous features were computed on the image alone (audit.features.flipAverage changed)',
    );
    expect(r.outcomes.features.info.featureReuse).to.deep.equal({ recomputed: 38, reused: 0, from: null });
  });
});
