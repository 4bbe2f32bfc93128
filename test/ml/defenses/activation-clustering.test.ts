import { expect } from 'chai';
import { defaultAuditConfig } from '../../../ml/config.js';
import { clusterClasses } from '../../../ml/defenses/activation-clustering.js';
import { createDefense } from '../../../ml/defenses/index.js';
import { synthetic, where } from './synthetic.js';

const ac = createDefense('activation-clustering');
const config = defaultAuditConfig.activationClustering;

describe('activation-clustering defense (Chen et al. 2018)', () => {
  it("defaults to the paper's 10 dimensions and 0.35 relative size, and ART's 0.1 silhouette", () => {
    expect(config).to.deep.equal({ dims: 10, sizeThreshold: 0.35, silhouetteThreshold: 0.1, features: 'encoder' });
  });

  it('flags the class with a planted 10% cluster and removes that cluster; unimodal classes are kept whole', () => {
    const { input, planted } = synthetic({ mislabel: false });
    const classes = clusterClasses(input.features, input.labels, 3, config);
    expect(classes.map((c) => c.flagged)).to.deep.equal([true, false, false]);
    expect(classes[0].relativeSize).to.equal(0.1);
    expect(classes[0].silhouette).to.be.greaterThan(0.3);
    // A unimodal Gaussian splits into two halves, far from a small cluster.
    for (const c of classes.slice(1)) expect(c.relativeSize, `class ${c.index}`).to.be.greaterThan(0.35);

    const es = ac.split(input, config);
    expect(where(es, (e) => e.action === 'drop')).to.deep.equal(planted);
    for (const i of planted) expect(es[i].side).to.equal('poisoned');
    for (const e of es.filter((e) => e.action !== 'drop')) expect([e.action, e.side]).to.deep.equal(['keep', 'clean']);
    expect(es[0].reason).to.match(
      /target airplane \(0\) \(smaller cluster 10%, silhouette 0\.\d+; targets found: airplane \(0\)\): in the smaller cluster -> removed/,
    );
    expect(es[300].reason).to.match(/automobile \(1\) not flagged .*targets found: airplane \(0\)\): kept/);
  });

  it('leaves a clean set alone', () => {
    const es = ac.split(synthetic({ plant: false, mislabel: false }).input, config);
    expect(where(es, (e) => e.action !== 'keep')).to.deep.equal([]);
    expect(es[0].reason).to.match(/no target found/);
  });

  it('needs both tests: a small cluster without a high enough silhouette is not a target', () => {
    const { input } = synthetic({ mislabel: false });
    expect(ac.split(input, { ...config, silhouetteThreshold: 0.99 }).every((e) => e.action === 'keep')).to.equal(true);
    expect(ac.split(input, { ...config, sizeThreshold: 0.05 }).every((e) => e.action === 'keep')).to.equal(true);
    // -1 turns the silhouette test off; the size test alone still spares the unimodal classes.
    expect(where(ac.split(input, { ...config, silhouetteThreshold: -1 }), (e) => e.action === 'drop')).to.have.length(20);
  });

  it('rejects config values outside their ranges', () => {
    const { input } = synthetic();
    expect(() => ac.split(input, { ...config, dims: 0 })).to.throw('activation-clustering config: dims must be an integer >= 1, got 0');
    expect(() => ac.split(input, { ...config, dims: 2.5 })).to.throw(/dims must be an integer >= 1, got 2.5/);
    expect(() => ac.split(input, { ...config, sizeThreshold: 0.5 })).to.throw(/sizeThreshold must be in \(0, 0.5\), got 0.5/);
    expect(() => ac.split(input, { ...config, silhouetteThreshold: 1.5 })).to.throw(/silhouetteThreshold must be in \[-1, 1\], got 1.5/);
  });
});
