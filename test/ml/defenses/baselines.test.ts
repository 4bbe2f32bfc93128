// What every baseline defense owes the seam: registered with its own config section (which the
// pipeline file fills and the workflow graph passes on), the cleansed.jsonl contract on awkward
// inputs, the same output for the same input, and no use of the flow method's facts.
import { expect } from 'chai';
import { parsePipeline } from '../../../client/pipeline.js';
import { DEFENSE_SECTION, defaultAuditConfig } from '../../../ml/config.js';
import type { CleansedEntry } from '../../../ml/audit-report.js';
import { createDefense, DEFENSE_NAMES, type DefenseInput } from '../../../ml/defenses/index.js';
import { matrix } from '../../../ml/matrix.js';
import { AUDIT_DAG, type NodeFacts } from '../../../workflows/graph.js';
import { pipelineProblems } from '../../expect-errors.js';
import { detection } from '../fixtures.js';
import { synthetic } from './synthetic.js';

const BASELINES = ['spectral-signatures', 'activation-clustering', 'knn-consistency'] as const;

function run(name: (typeof BASELINES)[number], input: DefenseInput): CleansedEntry[] {
  const d = createDefense(name);
  return d.split(input, d.configOf(defaultAuditConfig));
}

describe('baseline defenses: registry and config sections', () => {
  it('registers the three baselines after the paper method, then no defense, each reading its own AuditConfig section', () => {
    expect(DEFENSE_NAMES).to.deep.equal(['flow-relabel', ...BASELINES, 'none']);
    for (const name of DEFENSE_NAMES) {
      const section = DEFENSE_SECTION[name];
      expect(createDefense(name).configOf(defaultAuditConfig), name).to.equal(section === null ? null : defaultAuditConfig[section]);
    }
  });

  it('no defense keeps every sample with its own label, on the clean side', () => {
    const labels = Int32Array.from([0, 1, 1]);
    const out = createDefense('none').split(
      { ids: ['a', 'b', 'c'], labels, classNames: ['x', 'y'], features: matrix(3, 1), density: matrix(3, 2), detections: [] },
      null,
    );
    expect(out.map((e) => [e.id, e.label, e.action, e.side])).to.deep.equal([
      ['a', 0, 'keep', 'clean'],
      ['b', 1, 'keep', 'clean'],
      ['c', 1, 'keep', 'clean'],
    ]);
  });

  it("merges a pipeline file's section onto the defaults and the relabel node passes the selected defense's section", async () => {
    const p = await parsePipeline(
      [
        'name: t',
        'dataset: { format: cifar10, split: train, imageSize: 32 }',
        'output: out',
        'audit: { defense: activation-clustering, activationClustering: { dims: 5 }, knnConsistency: { k: 3 } }',
      ].join('\n'),
      '/p/x.yaml',
    );
    expect(p.audit.activationClustering).to.deep.equal({ ...defaultAuditConfig.activationClustering, dims: 5 });
    expect(p.audit.knnConsistency).to.deep.equal({ ...defaultAuditConfig.knnConsistency, k: 3 });
    expect(p.audit.spectralSignatures).to.deep.equal(defaultAuditConfig.spectralSignatures);
    const relabel = AUDIT_DAG.find((n) => n.id === 'relabel')!;
    const facts = { timings: {}, warnings: [], cached: [], artifacts: {} } as unknown as NodeFacts;
    expect(relabel.params(p, facts)).to.deep.equal({ defense: 'activation-clustering', config: p.audit.activationClustering });
    const paper = { ...p, audit: { ...p.audit, defense: 'flow-relabel' as const } };
    expect(relabel.params(paper, facts)).to.deep.equal({ defense: 'flow-relabel', config: p.audit.relabel });
  });

  it('rejects out-of-range values in the sections of a pipeline file', async () => {
    const text = (audit: string) => `name: t\ndataset: { format: cifar10, split: train, imageSize: 32 }\noutput: out\naudit: ${audit}\n`;
    expect((await pipelineProblems(text('{ spectralSignatures: { removeFraction: 1 } }'))).join('\n')).to.match(/removeFraction/);
    expect((await pipelineProblems(text('{ activationClustering: { sizeThreshold: 0.5 } }'))).join('\n')).to.match(/sizeThreshold/);
    expect((await pipelineProblems(text('{ knnConsistency: { relabelFraction: 0.5 } }'))).join('\n')).to.match(/relabelFraction/);
    expect((await pipelineProblems(text('{ knnConsistency: { neighbours: 5 } }'))).join('\n')).to.match(/neighbours/);
    expect((await pipelineProblems(text('{ spectralSignatures: { features: pixels } }'))).join('\n')).to.match(/features/);
  });

  it('refuses classifier features without the retrain settings that train the classifier', async () => {
    const text = (audit: string) => `name: t\ndataset: { format: cifar10, split: train, imageSize: 32 }\noutput: out\naudit: ${audit}\n`;
    const problems = await pipelineProblems(
      text('{ defense: activation-clustering, activationClustering: { features: classifier }, retrain: false }'),
    );
    expect(problems.join('\n')).to.match(/audit\.activationClustering\.features.*features: classifier .* retrain is false/);
    // The section of a defense that is not selected is not read: no refusal.
    const other = await parsePipeline(
      text('{ defense: activation-clustering, spectralSignatures: { features: classifier }, retrain: false }'),
      '/p/x.yaml',
    );
    expect(other.audit.retrain).to.equal(undefined);
  });
});

describe('baseline defenses: the contract', () => {
  /** 4 classes, of which class 3 has no sample and class 2 one; 2-D features with a zero row. */
  function awkward(): DefenseInput {
    const labels = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 1, 2, 0, 1]);
    const n = labels.length;
    const f = Float32Array.from({ length: n * 2 }, (_, k) => Math.cos(k * 1.7) * (k + 1));
    f.fill(0, 0, 2); // sample 0: a zero feature vector
    return {
      features: matrix(n, 2, f),
      labels,
      classNames: ['a', 'b', 'c', 'd'],
      ids: Array.from({ length: n }, (_, i) => `s${i}`),
      density: matrix(n, 4),
      detections: [],
    };
  }

  for (const name of BASELINES) {
    it(`${name}: one valid entry per sample, in order, on small, empty and one-sample classes (checkCleansed via createDefense)`, () => {
      const input = awkward();
      const es = run(name, input); // createDefense's split throws on a broken contract
      expect(es.map((e) => e.id)).to.deep.equal(input.ids);
      for (const e of es) expect(e.reason, e.id).to.be.a('string').and.not.equal('');
    });

    it(`${name}: same input, same output, and the input is not modified`, () => {
      const a = synthetic();
      const before = Float32Array.from(a.input.features.data);
      const first = run(name, a.input);
      expect(a.input.features.data).to.deep.equal(before);
      expect(run(name, synthetic().input)).to.deep.equal(first);
    });

    it(`${name}: reads features and labels only, not the flow method's density or detections`, () => {
      const { input } = synthetic();
      const n = input.labels.length;
      const other: DefenseInput = {
        ...input,
        density: matrix(
          n,
          3,
          Float32Array.from({ length: n * 3 }, (_, k) => -((k * 7919) % 101)),
        ),
        detections: [detection(0, 'clean'), detection(1, 'non-disruptive'), detection(2, 'disruptive')],
      };
      expect(run(name, other)).to.deep.equal(run(name, input));
    });
  }
});
