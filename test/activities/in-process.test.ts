// The audit in process (activities/in-process.ts) on real images: a CIFAR-10 subset with a
// BadNets trigger on 10% (target 0) through the same DAG and stage engine as the Temporal
// pipeline, on the CPU. Detection quality at this tiny scale is measured by
// `npm run bench -- detection-scale`, not here; here: the contract, determinism and the cache.
import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { auditDataset, type InProcessResult } from '../../activities/in-process.js';
import { parsePipeline } from '../../client/pipeline.js';
import { readMatrix } from '../../activities/io.js';
import type { AuditReport, CleansedEntry } from '../../ml/audit-report.js';
import { createDefense } from '../../ml/defenses/index.js';
import { pixelComponents } from '../../ml/pixel-components.js';
import { openDataset } from '../../data/dataset.js';
import { activeNodes } from '../../workflows/dag.js';
import type { Pipeline } from '../../workflows/types.js';
import { tinyImageFolder } from '../temporal-helpers.js';

describe('auditDataset in process (CIFAR-10 subset, BadNets 10%)', function () {
  this.timeout(20 * 60_000);
  let dir: string;
  let pipeline: Pipeline;
  let first: InProcessResult;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'audit-in-process-'));
    const file = join(dir, 'audit.yaml');
    const yaml = stringify({
      name: 'in-process',
      dataset: { format: 'cifar10', split: 'train', imageSize: 32, limitPerClass: 30 },
      testSet: { format: 'cifar10', split: 'test', limitPerClass: 10 },
      attack: { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 },
      audit: {
        seed: 7,
        encoder: { kind: 'simclr', width: 4, epochs: 1, batchSize: 64, projectionDim: 32 },
        flow: { epochs: 3, batchSize: 16, hidden: 32 },
        retrain: { width: 4, epochs: 1, batchSize: 64, milestones: [] },
      },
      output: 'out',
    });
    await writeFile(file, yaml);
    pipeline = await parsePipeline(yaml, file);
    first = await auditDataset(pipeline, { store: join(dir, 'store') });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('runs every node of the DAG and writes one cleansed entry per sample, counts adding up', async () => {
    const nodes = activeNodes(pipeline).map((n) => n.id);
    expect(Object.keys(first.outcomes).filter((id) => !id.includes('['))).to.have.members(nodes.filter((id) => id !== 'flow'));
    expect(Object.keys(first.outcomes).filter((id) => id.startsWith('flow['))).to.have.length(10);
    const lines = (await readFile(join(pipeline.output, 'cleansed.jsonl'), 'utf8')).trim().split('\n');
    const entries = lines.map((l) => JSON.parse(l) as CleansedEntry);
    expect(entries).to.deep.equal(first.cleansed);
    expect(entries).to.have.length(300);
    expect(new Set(entries.map((e) => e.id)).size).to.equal(300);
    const report = JSON.parse(await readFile(join(pipeline.output, 'report.json'), 'utf8')) as AuditReport;
    expect(report).to.deep.equal(first.report);
    const { kept, relabelled, dropped } = report.counts;
    expect(kept + relabelled + dropped).to.equal(300);
    for (const e of entries) {
      if (e.action === 'relabel') expect(e.newLabel).to.not.equal(e.label);
      expect(e.side).to.equal(e.action === 'keep' ? 'clean' : e.action === 'relabel' ? 'poisoned' : e.side);
    }
    expect(report.targetClasses).to.deep.equal(report.classes.filter((c) => c.flagged).map((c) => c.index));
    // Timings are named by DAG node, the same names the Temporal pipeline uses.
    expect(Object.keys(report.timings)).to.include.members([
      'ingest',
      'attack',
      'encoder',
      'features',
      'flow[0]',
      'density',
      'detect',
      'relabel',
      'retrain',
      'evaluate',
    ]);
    expect(report.evaluation?.acc).to.be.within(0, 1);
    expect(report.evaluation?.asr).to.be.within(0, 1);
    // Where each computing stage ran, in words: one process, one backend, so one device for all.
    expect(Object.keys(report.devices ?? {})).to.have.members(['encoder', 'features', 'density', 'evaluate']);
    expect(new Set(Object.values(report.devices ?? {})).size).to.equal(1);
    expect(report.devices?.encoder).to.match(report.backend.startsWith('tensorflow') ? /^(CPU|GPU): libtensorflow / : /^CPU: /);
    expect(first.density.rows).to.equal(300);
    expect(first.density.cols).to.equal(10);
    expect(first.detections).to.have.length(10);
  });

  it('a second run on the same store is served from the cache, with the same result', async () => {
    const again = await auditDataset(pipeline, { store: join(dir, 'store') });
    for (const [id, out] of Object.entries(again.outcomes)) expect(out.cached, id).to.equal(id !== 'report');
    expect(again.cleansed).to.deep.equal(first.cleansed);
    const { timings: _t1, cachedStages: cached1, sinceLastAudit: since1, ...report1 } = first.report;
    const { timings: _t2, cachedStages: cached2, sinceLastAudit: since2, ...report2 } = again.report;
    expect(report2).to.deep.equal(report1);
    expect(cached1).to.deep.equal([]);
    expect(cached2).to.have.members(Object.keys(again.outcomes).filter((id) => id !== 'report'));
    // The second run diffs against the outputs the first left in the folder: nothing changed.
    expect(since1).to.equal(undefined);
    expect(since2).to.include({ newlyRelabelled: 0, newlyDropped: 0, restored: 0 });
    expect(since2?.samples).to.deep.equal({ added: 0, removed: 0, labelChanged: 0, common: first.cleansed.length });
    expect(since2?.verdictChanges).to.deep.equal([]);
  });

  it('gives the same result for the same seed on a fresh store', async () => {
    const fresh = await auditDataset(pipeline, { store: join(dir, 'store-2') });
    expect(Object.values(fresh.outcomes).every((o) => !o.cached)).to.equal(true);
    expect(fresh.cleansed).to.deep.equal(first.cleansed);
    // Same artifacts (content-addressed keys), same report; only the diff against the folder's last audit is new.
    const { sinceLastAudit: _since, ...freshReport } = fresh.report;
    expect({ ...freshReport, timings: {} }).to.deep.equal({ ...first.report, timings: {} });
    expect(fresh.report.artifacts).to.deep.equal(first.report.artifacts);
  });

  it('pools encoder stages 2, 3 and 4 by default; the backbone alone shares the encoder, its columns the same', async () => {
    expect(first.report.config.features.stages).to.deep.equal([2, 3, 4]);
    const backbone: Pipeline = { ...pipeline, audit: { ...pipeline.audit, features: { ...pipeline.audit.features, stages: [4] } } };
    const r = await auditDataset(backbone, { store: join(dir, 'store') });
    expect(r.outcomes.encoder?.cached).to.equal(true);
    expect(r.outcomes.features?.cached).to.equal(false);
    expect(r.outcomes['flow[0]']?.cached).to.equal(false);
    const wide = await readMatrix(r.store.dir(first.outcomes.features!.ref), 'raw');
    const plain = await readMatrix(r.store.dir(r.outcomes.features!.ref), 'raw');
    // Width 4: stages 2, 3 and 4 have 8, 16 and 32 channels; the last 32 columns are the backbone output.
    expect([wide.rows, wide.cols, plain.cols]).to.deep.equal([300, 56, 32]);
    for (let i = 0; i < 300; i += 37)
      for (let j = 0; j < 32; j++) expect(wide.data[i * 56 + 24 + j]).to.be.closeTo(plain.data[i * 32 + j], 1e-5);
    expect(r.report.config.features.stages).to.deep.equal([4]);
    expect(r.cleansed).to.have.length(300);
  });

  it('relabels with the pixel components of the images it audits, the stages before detection from the cache', async () => {
    // A threshold every class's rank-z is under, so that every class is a target and relabels
    // its lowest-score 15%: at this tiny scale the real target is not reliably flagged.
    const withPixels: Pipeline = {
      ...pipeline,
      audit: {
        ...pipeline.audit,
        detection: { ...pipeline.audit.detection, betaND: 100 },
        relabel: { ...pipeline.audit.relabel, pixelComponents: 8 },
      },
    };
    const r = await auditDataset(withPixels, { store: join(dir, 'store') });
    for (const id of ['encoder', 'features', 'density']) expect(r.outcomes[id]?.cached, id).to.equal(true);
    expect(r.outcomes.relabel?.cached).to.equal(false);
    expect(r.report.config.relabel.pixelComponents).to.equal(8);
    const newLabels = (es: CleansedEntry[]) => es.map(({ id, action, newLabel }) => ({ id, action, newLabel }));
    expect(r.cleansed.filter((e) => e.action === 'relabel')).to.not.be.empty;
    // The split is flow-relabel's on the stage's features with the attacked images' components
    // beside them, and the components changed where some samples went.
    const data = await openDataset(join(r.store.dir(r.outcomes.attack!.ref), 'dataset'));
    try {
      const input = {
        ids: data.ids,
        labels: data.labels,
        classNames: data.classes,
        features: await readMatrix(r.store.dir(r.outcomes.features!.ref), 'features'),
        density: r.density,
        detections: r.detections,
        pixelComponents: await pixelComponents(data, 8),
      };
      const flowRelabel = createDefense('flow-relabel');
      expect(newLabels(r.cleansed)).to.deep.equal(newLabels(flowRelabel.split(input, withPixels.audit.relabel)));
      expect(newLabels(r.cleansed)).to.not.deep.equal(
        newLabels(flowRelabel.split(input, { ...withPixels.audit.relabel, pixelComponents: 0 })),
      );
    } finally {
      await data.close();
    }
  });

  it("runs spectral signatures on a poisoned-data classifier's penultimate features when asked, the encoder's stages from the cache", async () => {
    const onClassifier: Pipeline = {
      ...pipeline,
      audit: { ...pipeline.audit, defense: 'spectral-signatures', spectralSignatures: { removeFraction: 0.1, features: 'classifier' } },
    };
    const r = await auditDataset(onClassifier, { store: join(dir, 'store') });
    for (const id of ['encoder', 'features', 'density', 'detect']) expect(r.outcomes[id]?.cached, id).to.equal(true);
    expect(r.outcomes['classifier-features']?.cached).to.equal(false);
    const penultimate = await readMatrix(r.store.dir(r.outcomes['classifier-features']!.ref), 'features');
    expect([penultimate.rows, penultimate.cols]).to.deep.equal([300, 8 * 4]); // ResNet-18 width 4 pools 8 x 4 channels
    const encoder = await readMatrix(r.store.dir(r.outcomes.features!.ref), 'features');
    // The split is spectral signatures' on the classifier's features, not on the encoder's.
    const ss = createDefense('spectral-signatures');
    const input = {
      ids: r.cleansed.map((e) => e.id),
      labels: Int32Array.from(r.cleansed, (e) => e.label),
      classNames: r.report.dataset.classes,
    };
    const facts = { density: r.density, detections: r.detections };
    expect(r.cleansed).to.deep.equal(ss.split({ ...input, ...facts, features: penultimate }, onClassifier.audit.spectralSignatures));
    expect(r.cleansed).to.not.deep.equal(ss.split({ ...input, ...facts, features: encoder }, onClassifier.audit.spectralSignatures));
    const perClass = r.report.classes.map((k) => Math.round(0.1 * k.count)); // 10% of every class, clean ones too
    expect(r.report.counts.dropped).to.equal(perClass.reduce((a, b) => a + b));
  });
});

describe('auditDataset in process: failures', function () {
  this.timeout(120_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'audit-in-process-fail-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function tinyPipeline(classes: number, encoderEpochs: number): Promise<Pipeline> {
    const root = await tinyImageFolder(join(dir, `data-${classes}`), classes, 8);
    const file = join(dir, `p-${classes}-${encoderEpochs}.yaml`);
    const yaml = stringify({
      name: 'fail',
      dataset: { format: 'imagefolder', root, imageSize: 32 },
      audit: { encoder: { kind: 'simclr', width: 4, epochs: encoderEpochs, batchSize: 8, projectionDim: 16 }, retrain: false },
      output: join(dir, 'out'),
    });
    await writeFile(file, yaml);
    return parsePipeline(yaml, file);
  }

  it('refuses a one-class dataset after ingest, with the reason, and trains nothing', async function () {
    const stages: string[] = [];
    const err = await auditDataset(await tinyPipeline(1, 1), { store: join(dir, 'store'), onStage: (id) => stages.push(id) }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/1 class\(es\); an audit needs at least 2/);
    expect(stages.filter((s) => s !== 'ingest')).to.deep.equal([]);
  });

  it('stops at the next batch when its signal aborts', async function () {
    const stop = new AbortController();
    const err = await auditDataset(await tinyPipeline(2, 500), {
      store: join(dir, 'store'),
      signal: stop.signal,
      onStage: (id, event) => {
        if (id === 'encoder' && event === 'start') setTimeout(() => stop.abort(new Error('stopped by the test')), 200);
      },
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.name).to.equal('AbortError');
  });
});
