import { expect } from 'chai';
import { checkCleansed } from '../../ml/cleansed.js';
import { defaultAuditConfig } from '../../ml/config.js';
import type { CleansedEntry } from '../../ml/audit-report.js';
import { createDefense, DEFENSE_NAMES, isDefenseName, runDefense, type DefenseInput } from '../../ml/defenses/index.js';
import { matrix } from '../../ml/matrix.js';
import { splitAndRelabel } from '../../ml/relabel.js';
import { poisonScores } from '../../ml/score.js';
import { detection } from './fixtures.js';

// alpha 0.15: 3 samples per end of a class of 20. The known answers below are the flows' (the
// density matrix says where each poisoned row came from); 'shared-gaussian' has its own test.
const relabel = { ...defaultAuditConfig.relabel, model: 'flows' as const };

const det = detection;

/** [row, new label] of every relabelled entry, in row order. */
const relabelledOf = (es: readonly CleansedEntry[]) => es.flatMap((e, i) => (e.action === 'relabel' ? [[i, e.newLabel]] : []));

/**
 * A density matrix with a known answer. Class 0 (non-disruptive target, 20 samples): rows 2, 9
 * and 15 are poisoned from classes 1, 2 and 1, so their source flow explains them far better
 * than flow 0 (lowest poison score). Class 1 (disruptive target, 20 samples): rows 20, 21, 22
 * are a cluster only flow 1 explains (highest poison score). Class 2 (10 samples): unflagged.
 * Small offsets by index break ties so the order inside each class is fixed.
 */
function setup(): { input: DefenseInput; source: Map<number, number>; cluster: number[] } {
  const source = new Map([
    [2, 1],
    [9, 2],
    [15, 1],
  ]);
  const cluster = [20, 21, 22];
  const labels: number[] = [];
  const rows: number[][] = [];
  for (let i = 0; i < 50; i++) {
    const y = i < 20 ? 0 : i < 40 ? 1 : 2;
    const e = 0.01 * i;
    const row = [-12 - e, -12 - e, -12 - e];
    row[y] = -3 - e;
    const from = source.get(i);
    if (from !== undefined) {
      row[0] = -9 - e;
      row[from] = -2 - e;
    }
    if (cluster.includes(i)) row.splice(0, 3, -40, -1 - e, -40);
    labels.push(y);
    rows.push(row);
  }
  const features = matrix(
    50,
    4,
    Float32Array.from({ length: 200 }, (_, k) => Math.sin(k)),
  );
  return {
    input: {
      features,
      labels: Int32Array.from(labels),
      classNames: ['airplane', 'automobile', 'bird'],
      ids: labels.map((_, i) => `img${i}`),
      density: matrix(50, 3, Float32Array.from(rows.flat())),
      detections: [det(0, 'non-disruptive'), det(1, 'disruptive'), det(2, 'clean')],
    },
    source,
    cluster,
  };
}

describe('defense registry', () => {
  it("lists the paper's method first and makes it the default", () => {
    expect(DEFENSE_NAMES[0]).to.equal('flow-relabel');
    expect(defaultAuditConfig.defense).to.equal('flow-relabel');
    for (const name of DEFENSE_NAMES) {
      expect(isDefenseName(name)).to.equal(true);
      expect(createDefense(name).name).to.equal(name);
    }
    expect(createDefense('flow-relabel').configOf(defaultAuditConfig)).to.equal(defaultAuditConfig.relabel);
  });

  it('rejects an unknown defense name, listing the known ones', () => {
    expect(isDefenseName('spectral')).to.equal(false);
    expect(() => createDefense('spectral')).to.throw(/unknown defense "spectral"; known defenses: flow-relabel/);
    expect(() => runDefense({ ...defaultAuditConfig, defense: 'nope' as 'flow-relabel' }, setup().input)).to.throw(
      /unknown defense "nope"; known defenses: .*flow-relabel/,
    );
  });
});

describe('flow-relabel defense', () => {
  it('gives exactly splitAndRelabel on the poison scores, through createDefense and runDefense', () => {
    const { input } = setup();
    const direct = splitAndRelabel(
      input.ids,
      input.labels,
      input.density,
      poisonScores(input.density, input.labels),
      input.detections,
      relabel,
      input.classNames,
    );
    expect(createDefense('flow-relabel').split(input, relabel)).to.deep.equal(direct);
    expect(runDefense({ ...defaultAuditConfig, relabel }, input)).to.deep.equal(direct);
  });

  it('relabels with the flows when the config has no model (an audit recorded before the setting)', () => {
    const { input } = setup();
    const { model: _dropped, ...recorded } = relabel;
    expect(createDefense('flow-relabel').split(input, recorded as typeof relabel)).to.deep.equal(
      createDefense('flow-relabel').split(input, relabel),
    );
  });

  it("relabels with the shared-covariance Gaussians by default: the features' answer, not the flows'", () => {
    const { input, source } = setup();
    // Features that put every poisoned row of class 0 at the mean of class 2, whatever the flows
    // say (rows 2 and 15 came from class 1 by the density); every other row at its class's mean,
    // spread a little so the covariance is not singular.
    const means = [
      [0, 0],
      [10, 0],
      [0, 10],
    ];
    const f = [...input.labels].flatMap((y, i) => {
      const m = source.has(i) ? means[2] : means[y];
      return [m[0] + 0.3 * Math.sin(3 * i), m[1] + 0.3 * Math.cos(5 * i)];
    });
    const withFeatures = { ...input, features: matrix(50, 2, Float32Array.from(f)) };
    expect(defaultAuditConfig.relabel.model).to.equal('shared-gaussian');
    // The default model, on the features alone (the pixel components have their own test).
    const byDefault = runDefense({ ...defaultAuditConfig, relabel: { ...defaultAuditConfig.relabel, pixelComponents: 0 } }, withFeatures);
    const relabelled = relabelledOf(byDefault);
    expect(relabelled).to.deep.equal([...source.keys()].map((i) => [i, 2]));
    // The split itself is the score's, the same under both models; only the new labels differ.
    const byFlows = createDefense('flow-relabel').split(withFeatures, relabel);
    expect(byDefault.map((e) => e.side)).to.deep.equal(byFlows.map((e) => e.side));
    expect(relabelledOf(byFlows)).to.deep.equal([...source.entries()]);
  });

  it('relabels with the pixel components beside the features when relabel.pixelComponents asks for them', () => {
    const { input, source } = setup();
    // Features that put every poisoned row of class 0 at class 2's mean, pixel components that
    // put it at its source class's, three times farther apart: the features alone say class 2,
    // with the pixels beside them the source wins.
    const near = (scale: number, poisonedAt: (i: number) => number) =>
      matrix(
        50,
        2,
        Float32Array.from(
          [...input.labels].flatMap((y, i) => {
            const c = source.has(i) ? poisonedAt(i) : y;
            return [scale * (c === 1 ? 1 : 0) + 0.3 * Math.sin(3 * i), scale * (c === 2 ? 1 : 0) + 0.3 * Math.cos(5 * i)];
          }),
        ),
      );
    const withPixels = { ...input, features: near(10, () => 2), pixelComponents: near(30, (i) => source.get(i)!) };
    const config = { ...defaultAuditConfig.relabel, pixelComponents: 2 };
    const es = createDefense('flow-relabel').split(withPixels, config);
    expect(relabelledOf(es)).to.deep.equal([...source.entries()]);
    // The features alone say class 2: the answer above came from the pixels.
    const alone = createDefense('flow-relabel').split(withPixels, { ...config, pixelComponents: 0 });
    expect(relabelledOf(alone)).to.deep.equal([...source.keys()].map((i) => [i, 2]));
    // The split is the poison score's whatever the relabelling model reads.
    expect(es.map((e) => e.side)).to.deep.equal(alone.map((e) => e.side));
    expect(() => createDefense('flow-relabel').split(input, config)).to.throw(
      /relabel\.pixelComponents is 2 but the input holds no pixel components for 50 samples/,
    );
    expect(() => createDefense('flow-relabel').split(withPixels, { ...config, pixelComponents: 1 })).to.throw(
      /holds 50 x 2 pixel components/,
    );
  });

  it('finds the known answer: poisoned rows relabelled to their source, the disruptive cluster removed', () => {
    const { input, source, cluster } = setup();
    const es = createDefense('flow-relabel').split(input, relabel);
    expect(es.map((e) => e.id)).to.deep.equal(input.ids);
    const relabelled = relabelledOf(es);
    expect(relabelled).to.deep.equal([...source.entries()]);
    const poisoned = es.flatMap((e, i) => (e.side === 'poisoned' ? [i] : []));
    expect(poisoned).to.deep.equal([...source.keys(), ...cluster]);
    for (const i of cluster) expect(es[i].action).to.equal('drop');
  });

  it("gives every entry a side consistent with its action and the class's split", () => {
    const { input } = setup();
    const es = createDefense('flow-relabel').split(input, relabel);
    for (const e of es) {
      if (e.action === 'relabel') expect(e.side, e.id).to.equal('poisoned');
      if (e.action === 'keep') expect(e.side, e.id).to.equal('clean');
      if (e.action === 'drop') expect(e.side, e.id).to.be.oneOf(['poisoned', 'uncertain']);
      // Unflagged class: kept whole, as clean.
      if (e.label === 2) expect([e.action, e.side], e.id).to.deep.equal(['keep', 'clean']);
    }
    // Flagged classes of 20: 3 poisoned, 3 clean, 14 uncertain each.
    for (const y of [0, 1]) {
      const n = (side: string) => es.filter((e) => e.label === y && e.side === side).length;
      expect([n('poisoned'), n('clean'), n('uncertain')], `class ${y}`).to.deep.equal([3, 3, 14]);
    }
  });

  it('rejects inputs whose shapes disagree', () => {
    const { input } = setup();
    const d = createDefense('flow-relabel');
    expect(() => d.split({ ...input, features: matrix(49, 4) }, relabel)).to.throw(
      /50 labels, 50 ids, 49 feature rows and 50 density rows/,
    );
    expect(() => d.split({ ...input, classNames: ['a', 'b'] }, relabel)).to.throw(/3 columns for 2 classes/);
    expect(() => d.split({ ...input, detections: [det(3, 'clean')] }, relabel)).to.throw(/class 3, outside 0..2/);
  });
});

describe('checkCleansed (the contract every defense output is held to)', () => {
  const ids = ['a', 'b'];
  const labels = Int32Array.from([0, 1]);
  const ok: CleansedEntry[] = [
    { id: 'a', label: 0, action: 'relabel', side: 'poisoned', newLabel: 1, reason: 'r' },
    { id: 'b', label: 1, action: 'drop', side: 'uncertain', reason: 'r' },
  ];
  it('accepts a well-formed split and names what is wrong in a broken one', () => {
    expect(() => checkCleansed('t', ok, ids, labels, 2)).not.to.throw();
    expect(() => checkCleansed('t', [ok[0]], ids, labels, 2)).to.throw(/1 cleansed entries for 2 samples/);
    expect(() => checkCleansed('t', [ok[1], ok[0]], ids, labels, 2)).to.throw(/expected sample a .*input order/);
    expect(() => checkCleansed('t', [{ ...ok[0], side: 'clean' }, ok[1]], ids, labels, 2)).to.throw(
      /side "clean" with action 'relabel' \(allowed: poisoned\)/,
    );
    expect(() => checkCleansed('t', [ok[0], { ...ok[1], action: 'keep' }], ids, labels, 2)).to.throw(/side "uncertain" with action 'keep'/);
    expect(() => checkCleansed('t', [{ ...ok[0], newLabel: 0 }, ok[1]], ids, labels, 2)).to.throw(/not another class/);
    expect(() => checkCleansed('t', [ok[0], { ...ok[1], newLabel: 0 }], ids, labels, 2)).to.throw(/newLabel 0 on a 'drop' entry/);
  });
});
