// The one orchestration (workflows/dag.ts) with a recording executor: which nodes run for
// which pipeline, with which inputs, in which order; the per-class fan-out; the repair of a
// corrupted artifact; and the refusals (one class, a wiring mistake in a DAG).
import { expect } from 'chai';
import { AUDIT_DAG, type DagNode, type StageName } from '../../workflows/graph.js';
import { activeNodes, AuditInputError, runAuditDag, type StageExecutor } from '../../workflows/dag.js';
import type { ArtifactRef, Pipeline, StageOutcome } from '../../workflows/types.js';
import { defaultAuditConfig, defaultSimclrEncoder } from '../../ml/config.js';

function pipeline(extra: Partial<Pipeline> = {}): Pipeline {
  return {
    name: 'dag',
    file: '/p/dag.yaml',
    dataset: { source: { format: 'imagefolder', root: '/data' } },
    audit: { ...defaultAuditConfig, retrain: undefined },
    output: '/out',
    temporal: {
      taskQueues: { cpu: 'c', gpu: 'g' },
      stageQueues: {} as Pipeline['temporal']['stageQueues'],
      heartbeatTimeouts: {} as Pipeline['temporal']['heartbeatTimeouts'],
      startToCloseTimeouts: {} as Pipeline['temporal']['startToCloseTimeouts'],
      maximumAttempts: 1,
      checkpointEvery: 1,
    },
    ...extra,
  };
}

interface Call {
  id: string;
  stage: StageName;
  params: unknown;
  inputs: Record<string, string>;
  /** Key of the artifact this call produced (set when it returns). */
  key?: string;
}

/** Runs nothing: each stage's artifact key is `<id>#<n>`, its facts those a real stage reports. */
class RecordingExecutor implements StageExecutor {
  readonly calls: Call[] = [];
  readonly planned: string[] = [];
  /** Node ids whose next artifact will fail its hash check (until the node runs again). */
  corruptNext = new Set<string>();
  private readonly corrupt = new Set<string>();
  private n = 0;
  constructor(private readonly classes: string[]) {}
  async run(id: string, stage: StageName, params: unknown, inputs: Record<string, ArtifactRef>): Promise<StageOutcome> {
    const call: Call = { id, stage, params, inputs: Object.fromEntries(Object.entries(inputs).map(([r, ref]) => [r, ref.key])) };
    this.calls.push(call);
    await new Promise((r) => setImmediate(r)); // let concurrently runnable nodes interleave
    for (const ref of Object.values(inputs))
      if (this.corrupt.has(ref.key)) throw Object.assign(new Error(`${id}: ${ref.key} corrupt`), { corrupt: ref.key });
    const info =
      stage === 'ingest'
        ? { figure: '', classes: this.classes }
        : stage === 'detect'
          ? { figure: '', targetClasses: [0] }
          : id === 'flow[1]'
            ? { figure: '', warnings: ['class "b" (1) has 5 samples'] }
            : { figure: '' };
    call.key = `${id}#${this.n++}`;
    if (this.corruptNext.delete(id)) this.corrupt.add(call.key);
    return { ref: { stage, key: call.key, sha256: '', bytes: 0 }, info, cached: false, seconds: 1 };
  }
  plan(rows: { id: string }[]): void {
    this.planned.push(...rows.map((r) => r.id));
  }
  corruptArtifact(err: unknown): string | undefined {
    return (err as { corrupt?: string }).corrupt;
  }
}

describe('the audit DAG (workflows/dag.ts)', function () {
  it('runs only the nodes a pipeline asks for, each after its inputs, per-class nodes once per class', async function () {
    const x = new RecordingExecutor(['a', 'b', 'c']);
    await runAuditDag(pipeline(), x);
    const ids = x.calls.map((c) => c.id);
    expect(ids).to.have.members([
      'ingest',
      'encoder',
      'features',
      'flow[0]',
      'flow[1]',
      'flow[2]',
      'density',
      'detect',
      'relabel',
      'report',
    ]);
    const at = (id: string) => ids.indexOf(id);
    for (const [before, after] of [
      ['ingest', 'encoder'],
      ['encoder', 'features'],
      ['features', 'flow[0]'],
      ['flow[2]', 'density'],
      ['density', 'detect'],
      ['detect', 'relabel'],
      ['relabel', 'report'],
    ])
      expect(at(before), `${before} before ${after}`).to.be.below(at(after));
    // The plan shows every row before anything runs, per-class rows once the classes are known.
    expect(x.planned).to.deep.equal([
      'ingest',
      'encoder',
      'features',
      'density',
      'detect',
      'relabel',
      'report',
      'flow[0]',
      'flow[1]',
      'flow[2]',
    ]);
  });

  it('wires each input to the artifact of its producer, per class and with alternatives', async function () {
    const x = new RecordingExecutor(['a', 'b']);
    await runAuditDag(pipeline({ attack: { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 } }), x);
    const call = (id: string) => x.calls.find((c) => c.id === id) as Call;
    const key = (id: string) => x.calls.find((c) => c.id === id)?.key;
    expect(call('attack').inputs).to.deep.equal({ dataset: key('ingest') });
    // The attacked copy is the training set when there is an attack.
    expect(call('encoder').inputs).to.deep.equal({ dataset: key('attack') });
    expect(call('density').inputs).to.include({ 'flow-0': key('flow[0]'), 'flow-1': key('flow[1]'), features: key('features') });
    expect(call('evaluate').inputs).to.have.keys(['relabel', 'dataset', 'attack']); // no model, no test set
    expect(call('flow[1]').params).to.include({ classIndex: 1, seed: defaultAuditConfig.seed + 1 });
    expect(call('density').params).to.deep.equal({ classes: 2, backend: 'auto' });
  });

  it('ingests the test set alongside the training set and hands the report every earlier timing', async function () {
    const x = new RecordingExecutor(['a', 'b']);
    const p = pipeline({ testSet: { source: { format: 'imagefolder', root: '/test' } } });
    await runAuditDag(p, x);
    expect(x.calls.slice(0, 2).map((c) => c.id)).to.have.members(['ingest', 'ingest-test']);
    const report = x.calls.find((c) => c.id === 'report')?.params as { timings: Record<string, number> };
    expect(Object.keys(report.timings)).to.include.members(['ingest', 'encoder', 'flow[0]', 'flow[1]', 'relabel']);
    // The stages' warnings reach the report, named by the stage that gave them.
    expect((report as unknown as { warnings: string[] }).warnings).to.deep.equal(['flow[1]: class "b" (1) has 5 samples']);
  });

  it('recomputes a corrupted input through its producer, then retries the consumer', async function () {
    const x = new RecordingExecutor(['a', 'b']);
    x.corruptNext.add('features');
    await runAuditDag(pipeline(), x);
    const features = x.calls.filter((c) => c.id === 'features');
    // Both flows found the damage; one recomputation served both.
    expect(features).to.have.length(2);
    const [damaged, fresh] = features.map((c) => c.key);
    const flows = x.calls.filter((c) => c.id.startsWith('flow['));
    expect(flows.filter((c) => c.inputs.features === damaged)).to.have.length(2);
    expect(flows.filter((c) => c.key !== undefined).map((c) => c.inputs.features)).to.deep.equal([fresh, fresh]);
    // A later consumer of the same artifact reads the fresh one too.
    expect(x.calls.find((c) => c.id === 'density')?.inputs.features).to.equal(fresh);
  });

  it('refuses a dataset of one class before training anything', async function () {
    const x = new RecordingExecutor(['only']);
    let err: unknown;
    await runAuditDag(pipeline(), x).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(AuditInputError);
    expect((err as Error).message).to.match(/1 class\(es\); an audit needs at least 2/);
    expect(x.calls.map((c) => c.stage)).to.not.include('flow');
  });

  it('rejects a DAG whose node wires an input its stage does not read, or misses a required one', async function () {
    const bad: DagNode[] = AUDIT_DAG.map((n) => (n.id === 'detect' ? { ...n, inputs: { density: 'density', labels: 'ingest' } } : n));
    await runAuditDag(pipeline(), new RecordingExecutor(['a', 'b']), bad).then(
      () => expect.fail('accepted'),
      (e: Error) => expect(e.message).to.match(/input 'labels' is not an input of stage detect/),
    );
    const missing: DagNode[] = AUDIT_DAG.map((n) => (n.id === 'detect' ? { ...n, inputs: { density: 'density' } } : n));
    await runAuditDag(pipeline(), new RecordingExecutor(['a', 'b']), missing).then(
      () => expect.fail('accepted'),
      (e: Error) => expect(e.message).to.match(/stage input 'dataset' is not wired/),
    );
  });

  it('lists the active nodes of a pipeline', function () {
    expect(activeNodes(pipeline()).map((n) => n.id)).to.not.include.members(['attack', 'retrain', 'evaluate', 'ingest-test']);
    const full = pipeline({
      attack: { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 },
      testSet: { source: { format: 'imagefolder', root: '/t' } },
      // A warm start adds the lineage node (found at run time in the output folder); a baseline
      // on classifier features the classifier-features node.
      audit: {
        ...defaultAuditConfig,
        encoder: { ...defaultSimclrEncoder, warmStart: 'previous' },
        defense: 'spectral-signatures',
        spectralSignatures: { removeFraction: 0.15, features: 'classifier' },
      },
    });
    expect(activeNodes(full).map((n) => n.id)).to.deep.equal(AUDIT_DAG.map((n) => n.id));
  });

  it("feeds a baseline the poisoned-data classifier's features only when its section asks for them", async function () {
    const audit = { ...defaultAuditConfig, defense: 'activation-clustering' as const };
    const onEncoder = new RecordingExecutor(['a', 'b']);
    await runAuditDag(pipeline({ audit }), onEncoder);
    expect(onEncoder.calls.map((c) => c.stage)).to.not.include('classifierFeatures');
    expect(onEncoder.calls.find((c) => c.id === 'relabel')?.inputs.features).to.match(/^features#/);

    const onClassifier = new RecordingExecutor(['a', 'b']);
    const features = { ...audit, activationClustering: { ...audit.activationClustering, features: 'classifier' as const } };
    await runAuditDag(pipeline({ audit: features }), onClassifier);
    const trained = onClassifier.calls.find((c) => c.stage === 'classifierFeatures');
    expect(trained?.inputs).to.deep.equal({ dataset: onClassifier.calls.find((c) => c.id === 'ingest')?.key });
    expect(trained?.params).to.include({ seed: audit.seed, stem: 'cifar', imageSize: 32 });
    expect((trained?.params as { config: unknown }).config).to.deep.equal(audit.retrain);
    expect(onClassifier.calls.find((c) => c.id === 'relabel')?.inputs.features).to.equal(trained?.key);
    // The flows still read the encoder's features.
    expect(onClassifier.calls.find((c) => c.id === 'density')?.inputs.features).to.match(/^features#/);
  });

  it('gives the features node the pooled stages only when they are not the backbone output alone', async function () {
    const plain = new RecordingExecutor(['a', 'b']);
    await runAuditDag(pipeline({ audit: { ...defaultAuditConfig, features: { ...defaultAuditConfig.features, stages: [4] } } }), plain);
    // The paper's features keep the parameters (and so the cache keys) they had before the setting.
    expect(plain.calls.find((c) => c.id === 'features')?.params).to.deep.equal({ backend: 'auto', batchSize: 128 });
    const pooled = new RecordingExecutor(['a', 'b']);
    await runAuditDag(pipeline(), pooled); // the default
    expect(pooled.calls.find((c) => c.id === 'features')?.params).to.deep.equal({ backend: 'auto', batchSize: 128, stages: [2, 3, 4] });
    // The encoder is the same: only the features and what reads them differ.
    expect(pooled.calls.find((c) => c.id === 'encoder')?.params).to.deep.equal(plain.calls.find((c) => c.id === 'encoder')?.params);
  });

  it('gives the features node flipAverage only when it is on, so that audits without it keep their keys', async () => {
    const averaged = new RecordingExecutor(['a', 'b']);
    await runAuditDag(
      pipeline({ audit: { ...defaultAuditConfig, features: { ...defaultAuditConfig.features, flipAverage: true } } }),
      averaged,
    );
    const node = averaged.calls.find((c) => c.id === 'features');
    expect(node?.params).to.deep.equal({ backend: 'auto', batchSize: 128, stages: [2, 3, 4], flipAverage: true });
    const plain = new RecordingExecutor(['a', 'b']);
    await runAuditDag(
      pipeline({ audit: { ...defaultAuditConfig, features: { ...defaultAuditConfig.features, flipAverage: false } } }),
      plain,
    );
    expect(plain.calls.find((c) => c.id === 'features')?.params).to.not.have.property('flipAverage');
  });
});
