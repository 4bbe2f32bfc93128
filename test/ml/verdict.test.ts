import { expect } from 'chai';
import type { DetectionConfig } from '../../ml/config.js';
import type { CleansedEntry } from '../../ml/audit-report.js';
import type { ClassDetection } from '../../ml/detect.js';
import { classSplits, classTests, nearMisses } from '../../ml/verdict.js';

const cfg: DetectionConfig = { ndNormalization: 'robust-z', betaND: -2.5, betaD: 0.05, bins: 30, lambda: 0.75 };

function det(index: number, z: number, sD: number, valley = -Infinity): ClassDetection {
  const ndFlag = z < cfg.betaND;
  const dFlag = sD > cfg.betaD;
  return {
    index,
    count: 10,
    sND: 0,
    ownNLL: 0,
    foreignRank: 0,
    sNDNormalized: z,
    sD,
    valley,
    ndFlag,
    dFlag,
    kind: dFlag ? 'disruptive' : ndFlag ? 'non-disruptive' : 'clean',
  };
}

describe('verdict', function () {
  it('margins are signed distances past the threshold in the direction each test fires', function () {
    const fired = classTests(det(0, -4.2, 0), cfg);
    expect(fired.nonDisruptive.fired).to.equal(true);
    expect(fired.nonDisruptive.margin).to.be.closeTo(1.7, 1e-9);
    expect(fired.nonDisruptive.nearMiss).to.equal(false);
    expect(fired.disruptive.margin).to.be.closeTo(-0.05, 1e-9);
    expect(fired.disruptive.valley).to.equal(null);

    const d = classTests(det(1, 0.3, 0.2, -80.5), cfg).disruptive;
    expect(d).to.include({ fired: true, valley: -80.5 });
    expect(d.margin).to.be.closeTo(0.15, 1e-9);
  });

  it('flags the held-out blend (z = -2.27 against -2.5) as a near miss, and not a class half-way there', function () {
    const blend = classTests(det(3, -2.27, 0), cfg);
    expect(blend.nonDisruptive).to.include({ fired: false, nearMiss: true });
    expect(blend.nonDisruptive.margin).to.be.closeTo(-0.23, 1e-9);
    expect(classTests(det(4, -1.9, 0), cfg).nonDisruptive.nearMiss).to.equal(false);
    expect(classTests(det(5, 0.045, 0.045), cfg).disruptive.nearMiss).to.equal(true);
    expect(classTests(det(5, 0, 0.039), cfg).disruptive.nearMiss).to.equal(false);
    // Ratios are neutral at 1: 0.75 against a threshold of 0.7 is 83% of the way there.
    const ratio = classTests(det(6, 0.75, 0), { ...cfg, ndNormalization: 'median-ratio', betaND: 0.7 });
    expect(ratio.nonDisruptive.nearMiss).to.equal(true);
    expect(classTests(det(7, NaN, 0), cfg).nonDisruptive.nearMiss).to.equal(false);
  });

  it('lists near misses in class order with their test', function () {
    const tests = [det(0, -2.3, 0), det(1, -3, 0), det(2, 0, 0.045)].map((d) => classTests(d, cfg));
    expect(nearMisses(tests)).to.deep.equal([
      { index: 0, test: 'non-disruptive', statistic: -2.3, threshold: -2.5 },
      { index: 2, test: 'disruptive', statistic: 0.045, threshold: 0.05 },
    ]);
  });

  it('counts the split and its cost per class against ground truth', function () {
    const e = (label: number, action: CleansedEntry['action']): CleansedEntry => ({
      id: `s${label}-${action}`,
      label,
      action,
      side: action === 'keep' ? 'clean' : action === 'relabel' ? 'poisoned' : 'uncertain',
      ...(action === 'relabel' ? { newLabel: (label + 1) % 2 } : {}),
      reason: '',
    });
    // Class 0: poisoned 0 (relabelled), 1 (kept), 2 (dropped); genuine 3 (dropped), 4 (relabelled), 5 (kept).
    const cleansed = [e(0, 'relabel'), e(0, 'keep'), e(0, 'drop'), e(0, 'drop'), e(0, 'relabel'), e(0, 'keep'), e(1, 'keep')];
    const splits = classSplits(cleansed, 2, { attack: 'badnets', targetClass: 0, poisoned: [0, 1, 2], sourceLabels: [1, 1, 1] });
    expect(splits[0]).to.deep.equal({
      kept: 2,
      relabelled: 2,
      dropped: 2,
      truth: { poisoned: 3, poisonedKept: 1, genuineDropped: 1, genuineRelabelled: 1 },
    });
    expect(splits[1]).to.deep.equal({
      kept: 1,
      relabelled: 0,
      dropped: 0,
      truth: { poisoned: 0, poisonedKept: 0, genuineDropped: 0, genuineRelabelled: 0 },
    });
    expect(classSplits(cleansed, 2)[0]).to.deep.equal({ kept: 2, relabelled: 2, dropped: 2 });
    expect(() => classSplits(cleansed, 2, { attack: 'x', targetClass: 0, poisoned: [9], sourceLabels: [1] })).to.throw(
      /poisoned index 9 outside the 7 samples/,
    );
  });
});
