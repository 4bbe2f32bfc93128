import { expect } from 'chai';
import { defaultAuditConfig } from '../../../ml/config.js';
import { createDefense } from '../../../ml/defenses/index.js';
import { spectralScores } from '../../../ml/defenses/spectral-signatures.js';
import { PER_CLASS, synthetic, where } from './synthetic.js';

const ss = createDefense('spectral-signatures');
const config = defaultAuditConfig.spectralSignatures;

describe('spectral-signatures defense (Tran et al. 2018)', () => {
  it('defaults to removing 1.5 x 10% = 15% of each class', () => {
    expect(config).to.deep.equal({ removeFraction: 0.15, features: 'encoder' });
  });

  it('removes the planted 10% cluster of a class within its top 15% outlier scores', () => {
    const { input, planted } = synthetic({ mislabel: false });
    const es = ss.split(input, config);
    const removed = new Set(where(es, (e) => e.action === 'drop'));
    const caught = planted.filter((i) => removed.has(i)).length;
    expect(caught / planted.length).to.be.at.least(0.9);
    // The planted samples are the class's highest scores: all 20 before any clean one.
    const scores = spectralScores(input.features, input.labels, 3);
    const cleanMax = Math.max(
      ...Array.from({ length: PER_CLASS }, (_, i) => i)
        .filter((i) => !planted.includes(i))
        .map((i) => scores[i]),
    );
    expect(Math.min(...planted.map((i) => scores[i]))).to.be.greaterThan(cleanMax);
  });

  it('removes the same share from every class, clean ones included, as poisoned; keeps the rest as clean', () => {
    const { input } = synthetic({ mislabel: false });
    const es = ss.split(input, config);
    for (const y of [0, 1, 2]) {
      const cls = es.filter((e) => e.label === y);
      expect(cls.filter((e) => e.action === 'drop').length, `class ${y}`).to.equal(Math.round(0.15 * PER_CLASS));
    }
    for (const e of es) {
      expect([e.action, e.side], e.id).to.deep.equal(e.action === 'drop' ? ['drop', 'poisoned'] : ['keep', 'clean']);
      expect(e.score, e.id).to.be.a('number');
    }
    expect(es.find((e) => e.action === 'drop')!.reason).to.match(
      /top 15% outlier score of airplane \(0\).*every class; no target is detected/,
    );
  });

  it('follows removeFraction and rejects values outside (0, 1)', () => {
    const { input } = synthetic({ mislabel: false });
    expect(ss.split(input, { removeFraction: 0.05, features: 'encoder' }).filter((e) => e.action === 'drop').length).to.equal(3 * 10);
    expect(() => ss.split(input, { removeFraction: 0, features: 'encoder' })).to.throw(
      'spectral-signatures config: removeFraction must be in (0, 1), got 0',
    );
    expect(() => ss.split(input, { removeFraction: 1, features: 'encoder' })).to.throw(/removeFraction must be in \(0, 1\), got 1/);
    expect(() => ss.split(input, { removeFraction: Number.NaN, features: 'encoder' })).to.throw(
      /removeFraction must be in \(0, 1\), got null/,
    );
  });
});
