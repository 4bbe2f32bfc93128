// Pipeline files: the shipped pipelines load with defaults applied; every kind of mistake is
// reported with the file, the line and the path inside the document; the workflow id follows
// the audit's content and the dataset's identity.
import { expect } from 'chai';
import { mkdtemp, mkdir, readFile, rm, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditIdentity, workflowIdFor } from '../../client/audit.js';
import { durationMs, loadPipeline, parsePipeline, PipelineError } from '../../client/pipeline.js';
import { schemaFile } from '../../client/pipeline-schema.js';
import { renderSchema } from '../../scripts/write-schema.js';
import { defaultAuditConfig } from '../../ml/config.js';
import { repoRoot } from '../../data/paths.js';
import { pipelineProblems } from '../expect-errors.js';

const problems = pipelineProblems;

describe('pipeline files', function () {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-pipeline-'));
    await mkdir(join(dir, 'images', 'a'), { recursive: true });
    await writeFile(join(dir, 'images', 'a', '0.png'), 'x');
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('loads demo.yaml with defaults merged and paths made absolute', async function () {
    const p = await loadPipeline(join(repoRoot, 'pipelines', 'demo.yaml'));
    expect(p.name).to.equal('demo');
    expect(p.dataset).to.deep.equal({
      source: { format: 'cifar10', split: 'train' },
      limitPerClass: 50,
      name: 'cifar10-demo',
    });
    expect(p.attack).to.deep.equal({ name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 });
    expect(p.audit.encoder).to.deep.include({ kind: 'simclr', width: 8, lr: 3e-4, temperature: 0.5, stem: 'cifar' });
    expect(p.audit.detection).to.deep.equal(defaultAuditConfig.detection);
    expect(p.audit.imageSize, 'the one image size: dataset.imageSize in the file').to.equal(32);
    expect(p.audit.retrain).to.equal(undefined);
    expect(p.output).to.equal(join(repoRoot, 'out', 'demo'));
    expect(p.temporal.taskQueues).to.deep.equal({ cpu: 'audit-cpu', gpu: 'audit-gpu' });
    expect(p.temporal.stageQueues.encoder).to.equal('gpu');
    expect(p.temporal.stageQueues.flow).to.equal('cpu');
    expect(p.temporal.heartbeatTimeouts.encoder).to.equal(30_000); // the stage default in workflows/graph.ts
  });

  it('loads the paper pipeline with the paper retraining schedule', async function () {
    const p = await loadPipeline(join(repoRoot, 'pipelines', 'cifar10-paper.yaml'));
    expect(p.audit.encoder).to.deep.include({ width: 64, epochs: 200, batchSize: 256 });
    expect(p.audit.retrain).to.deep.include({ epochs: 200, milestones: [100, 150], lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
    expect(p.temporal.heartbeatTimeouts.encoder).to.equal(10 * 60_000);
    expect(p.temporal.checkpointEvery).to.equal(5);
  });

  it('accepts the ImageNet pipeline except for the dataset folders it expects you to provide', async function () {
    const list = await problems(
      (await import('node:fs')).readFileSync(join(repoRoot, 'pipelines', 'imagenet-subset.yaml'), 'utf8'),
      join(repoRoot, 'pipelines', 'imagenet-subset.yaml'),
    );
    expect(list).to.have.length(2);
    expect(list[0]).to.match(/imagenet-subset\.yaml:\d+:\d+: dataset\.root: folder not found: .*data\/imagenet-subset\/train$/);
    expect(list[1]).to.match(/testSet\.root: folder not found/);
  });

  it('names file, line and path for type errors, unknown keys and missing keys', async function () {
    const list = await problems(
      [
        'name: x',
        'dataset:',
        '  format: cifar10',
        '  split: train',
        '  imageSize: "32"',
        'audit:',
        '  flow: {epochs: 2, depth: 3}',
        '',
      ].join('\n'),
    );
    expect(list).to.include('/p/x.yaml:5:14: dataset.imageSize: expected integer, got string "32"');
    expect(list).to.include('/p/x.yaml:7:21: audit.flow.depth: unknown key "depth" (allowed: epochs, batchSize, lr, hidden)');
    expect(list).to.include('/p/x.yaml:1:1: (top level): missing required key "output"');
  });

  it('explains which keys a dataset format or encoder kind does not allow', async function () {
    const list = await problems(
      [
        'name: x',
        'dataset: {format: cifar10, split: train, root: /data, imageSize: 32}',
        'output: o',
        'audit:',
        '  encoder: {kind: pretrained}',
        '',
      ].join('\n'),
    );
    expect(list.some((l) => /x\.yaml:2:\d+: dataset: "root" not allowed with format "cifar10"/.test(l))).to.equal(true);
    expect(list.some((l) => /x\.yaml:5:\d+: audit\.encoder: missing required key "path"/.test(l))).to.equal(true);
  });

  it('takes the pooled encoder stages in any order as one setting, and refuses them where the encoder is not ours', async function () {
    const base = ['name: x', 'dataset: {format: cifar10, split: train, imageSize: 32}', 'output: o', 'audit:'];
    const parsed = await parsePipeline([...base, '  features: {stages: [4, 2, 3]}', ''].join('\n'), join(dir, 'x.yaml'));
    expect(parsed.audit.features.stages).to.deep.equal([2, 3, 4]);
    const plain = await parsePipeline(base.slice(0, 3).join('\n') + '\n', join(dir, 'x.yaml'));
    expect(plain.audit.features.stages).to.deep.equal([2, 3, 4]);
    // A pretrained encoder's features are its output: that is its default, not a refusal.
    const pretrained = await parsePipeline(
      [...base, `  encoder: {kind: pretrained, path: ${join(dir, 'images')}}`, ''].join('\n'),
      join(dir, 'x.yaml'),
    );
    expect(pretrained.audit.features.stages).to.deep.equal([4]);
    const onnx = await problems(
      [...base, `  encoder: {kind: pretrained, path: ${join(dir, 'images')}}`, '  features: {stages: [3, 4]}', ''].join('\n'),
    );
    expect(
      onnx.some((l) =>
        /audit\.features\.stages: features\.stages \[3, 4\] pools stages of the ResNet this project builds; a pretrained encoder/.test(l),
      ),
    ).to.equal(true);
    const bad = await problems([...base, '  features: {stages: [0, 4, 4]}', ''].join('\n'));
    expect(bad.some((l) => /audit\.features\.stages/.test(l))).to.equal(true);
  });

  it("merges a relabel model onto the section's defaults and refuses an unknown one, naming the choices", async function () {
    const file = (model: string) =>
      [
        'name: x',
        'dataset:',
        '  format: cifar10',
        '  split: train',
        '  imageSize: 32',
        'audit:',
        `  relabel: {model: ${model}}`,
        'output: o',
        '',
      ].join('\n');
    const p = await parsePipeline(file('flows'), join(dir, 'x.yaml'));
    expect(p.audit.relabel).to.deep.equal({ ...defaultAuditConfig.relabel, model: 'flows' });
    expect(defaultAuditConfig.relabel.model).to.equal('shared-gaussian');
    expect(await problems(file('lda'))).to.include(
      '/p/x.yaml:7:20: audit.relabel.model: expected one of "flows", "shared-gaussian", got string "lda"',
    );
  });

  it('relabels with 64 pixel components by default, takes 0 for none, and refuses them asked for with the flows', async function () {
    const file = (relabel: string) =>
      ['name: x', 'dataset: {format: cifar10, split: train, imageSize: 32}', 'audit:', `  relabel: ${relabel}`, 'output: o', ''].join('\n');
    const parsed = async (relabel: string) => (await parsePipeline(file(relabel), join(dir, 'x.yaml'))).audit.relabel;
    expect(defaultAuditConfig.relabel.pixelComponents).to.equal(64);
    expect(await parsed('{alpha: 0.15}')).to.deep.equal(defaultAuditConfig.relabel);
    expect(await parsed('{pixelComponents: 0}')).to.deep.equal({ ...defaultAuditConfig.relabel, pixelComponents: 0 });
    // The flows read no features: the default's components are not computed for them (relabel
    // stage), but asking for them in the file is a mistake worth saying.
    expect(await parsed('{model: flows}')).to.deep.equal({ ...defaultAuditConfig.relabel, model: 'flows' });
    expect(await problems(file('{model: flows, pixelComponents: 64}'))).to.deep.equal([
      '/p/x.yaml:4:27: audit.relabel.pixelComponents: adds columns to the features of the shared-gaussian relabelling model, and relabel.model flows reads no features: remove pixelComponents or use model shared-gaussian',
    ]);
    expect(await problems(file('{pixelComponents: 1000}'))).to.have.length(1);
  });

  it('rejects unknown stages and malformed durations in the temporal section', async function () {
    const list = await problems(
      [
        'name: x',
        'dataset: {format: cifar10, split: train, imageSize: 32}',
        'output: o',
        'temporal:',
        '  heartbeatTimeouts: {simclr: 5s, flow: 3 fortnights}',
        '',
      ].join('\n'),
    );
    expect(list.some((l) => /:5:\d+: temporal\.heartbeatTimeouts\.simclr: unknown stage "simclr"/.test(l))).to.equal(true);
    expect(list.some((l) => /:5:\d+: temporal\.heartbeatTimeouts\.flow: expected milliseconds or a duration/.test(l))).to.equal(true);
  });

  it('reports YAML syntax errors and duplicate keys with their line', async function () {
    expect((await problems('name: x\ndataset: [a, b\n'))[0]).to.match(/^\/p\/x\.yaml:\d+:\d+: \(top level\): YAML: /);
    expect((await problems('name: x\nname: y\n'))[0]).to.match(/^\/p\/x\.yaml:2:1: .*YAML: .*unique/i);
    expect((await problems('- just\n- a list\n'))[0]).to.match(/expected a mapping/);
  });

  it('checks that input files exist, naming the resolved path', async function () {
    const list = await problems('name: x\ndataset: {format: imagefolder, root: missing, imageSize: 32}\noutput: o\n', join(dir, 'p.yaml'));
    expect(list).to.deep.equal([`${join(dir, 'p.yaml')}:2:38: dataset.root: folder not found: ${join(dir, 'missing')}`]);
  });

  it('parses durations', function () {
    expect(durationMs(1500)).to.equal(1500);
    expect(durationMs('30s')).to.equal(30_000);
    expect(durationMs('1.5h')).to.equal(5_400_000);
    expect(() => durationMs('soon')).to.throw(/not a duration/);
  });

  it('accepts the duration strings Temporal reads (the ms package), with the value Temporal reads', async function () {
    const withTimeout = (value: string) =>
      `name: x\ndataset: {format: cifar10, split: train, imageSize: 32}\noutput: o\ntemporal: {heartbeatTimeouts: {flow: "${value}"}}\n`;
    const accepted: Record<string, number> = {
      '500ms': 500,
      '30s': 30_000,
      '.5s': 500,
      '5m': 300_000,
      '10 min': 600_000,
      '1.5h': 5_400_000,
      '2 days': 172_800_000,
      '3 weeks': 1_814_400_000,
      '1y': 31_557_600_000,
    };
    for (const [text, ms] of Object.entries(accepted)) {
      expect((await parsePipeline(withTimeout(text), '/p/x.yaml')).temporal.heartbeatTimeouts.flow, text).to.equal(ms);
      expect(durationMs(text), text).to.equal(ms);
    }
    // Not durations for ms either, or (the last three) ones ms reads but the schema asks to write
    // otherwise: no negative values, a unit on every string, lower-case units (5M is minutes).
    for (const text of ['soon', '3 fortnights', '1.', '5 s s', '-5s', '5', '5M']) {
      const list = await problems(withTimeout(text));
      expect(
        list.some((l) => /:4:\d+: temporal\.heartbeatTimeouts\.flow: expected milliseconds or a duration/.test(l)),
        text,
      ).to.equal(true);
    }
  });

  it('pipelines/schema.json is the one generated from client/pipeline-schema.ts', async function () {
    if ((await readFile(schemaFile, 'utf8')) !== (await renderSchema())) {
      expect.fail('pipelines/schema.json differs from the definition in client/pipeline-schema.ts: run `npm run schema`');
    }
  });

  describe('workflow identity', function () {
    const text = (extra = '') =>
      `name: idt\ndataset: {format: imagefolder, root: images, imageSize: 32}\noutput: out\naudit: {flow: {epochs: 3}${extra}}\n`;

    it('does not depend on key order, the file location or Temporal settings', async function () {
      const a = await parsePipeline(text(), join(dir, 'a.yaml'));
      const b = await parsePipeline(
        `output: out\ndataset: {imageSize: 32, root: images, format: imagefolder}\naudit: {flow: {epochs: 3}}\nname: idt\ntemporal: {checkpointEvery: 9}\n`,
        join(dir, 'b.yaml'),
      );
      expect(await workflowIdFor(a)).to.equal(await workflowIdFor(b));
      expect(await workflowIdFor(a)).to.match(/^audit-idt-[0-9a-f]{16}$/);
    });

    it('changes with a parameter and with the dataset files', async function () {
      const a = await parsePipeline(text(), join(dir, 'a.yaml'));
      const before = await auditIdentity(a);
      expect(await auditIdentity(await parsePipeline(text(', seed: 5'), join(dir, 'a.yaml')))).to.not.equal(before);
      await utimes(join(dir, 'images', 'a', '0.png'), new Date(), new Date(Date.now() + 5000));
      expect(await auditIdentity(a)).to.not.equal(before);
    });

    it("differs on another store's task queues, so a run never attaches to one it cannot serve", async function () {
      const a = await parsePipeline(text(), join(dir, 'a.yaml'));
      const onStore = { ...a, temporal: { ...a.temporal, taskQueues: { cpu: 'audit-cpu@0123456789ab', gpu: 'audit-gpu@0123456789ab' } } };
      expect(await workflowIdFor(onStore)).to.not.equal(await workflowIdFor(a));
    });
  });
});
