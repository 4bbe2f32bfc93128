import { expect } from 'chai';
import type { PoisonTruth } from '../../data/types.js';
import type { ClassKind, CleansedEntry, SampleSide } from '../../ml/audit-report.js';
import type { ClassDetection } from '../../ml/detect.js';
import { accuracy, attackSuccessRate, cleansingMetrics, sentToPoisoned } from '../../ml/evaluate.js';
import { splitAndRelabel } from '../../ml/relabel.js';
import { matrix } from '../../ml/matrix.js';

const keep = (label: number): CleansedEntry => ({ id: `s${label}`, label, action: 'keep', side: 'clean', reason: 'kept' });
const relabel = (label: number, newLabel: number): CleansedEntry => ({
  id: 'r',
  label,
  action: 'relabel',
  side: 'poisoned',
  newLabel,
  reason: 'relabelled',
});
const drop = (label: number, side: Exclude<SampleSide, 'clean'>, reason: string): CleansedEntry => ({
  id: 'd',
  label,
  action: 'drop',
  side,
  reason,
});

describe('evaluate', function () {
  it('accuracy and ASR on known answers', function () {
    expect(accuracy(Int32Array.from([0, 1, 2, 2]), Int32Array.from([0, 1, 1, 2]))).to.equal(0.75);
    expect(attackSuccessRate(Int32Array.from([0, 0, 3, 0, 5]), 0)).to.equal(0.6);
    expect(attackSuccessRate(Int32Array.from([1, 2]), 0)).to.equal(0);
  });

  it('rejects mismatched or empty inputs', function () {
    expect(() => accuracy(Int32Array.from([0]), Int32Array.from([0, 1]))).to.throw(/1 predictions for 2 labels/);
    expect(() => accuracy(new Int32Array(0), new Int32Array(0))).to.throw(/empty/);
    expect(() => attackSuccessRate(new Int32Array(0), 0)).to.throw(/empty/);
  });

  it('non-disruptive target: TPR, FPR and relabel accuracy on a hand-made manifest', function () {
    // Samples 0..9, target 0. Poisoned: 1 (from 3), 4 (from 5), 7 (from 3), 9 (from 2).
    const truth: PoisonTruth = { attack: 'badnets', targetClass: 0, poisoned: [1, 4, 7, 9], sourceLabels: [3, 5, 3, 2] };
    const cleansed: CleansedEntry[] = [
      keep(0), // clean target: kept
      relabel(0, 3), // poisoned, sent, right label
      relabel(0, 1), // clean target sent: a false positive
      keep(4), // other class, not flagged: outside FPR
      relabel(0, 6), // poisoned, sent, wrong label
      drop(0, 'uncertain', 'uncertain middle poison score -> dropped'), // clean target, middle: not sent
      keep(0), // clean target
      drop(0, 'uncertain', 'uncertain middle poison score -> dropped'), // poisoned, middle: missed
      keep(8),
      relabel(0, 2), // poisoned, sent, right label
    ];
    const m = cleansingMetrics(cleansed, truth, [0]);
    expect(m.tpr).to.equal(3 / 4);
    expect(m.fpr).to.equal(1 / 4); // clean samples labelled 0: 0, 2, 5, 6
    expect(m.relabelAccuracy).to.equal(2 / 3);
    expect(m.targetDetected).to.equal(true);
  });

  it('disruptive target: the removed poisoned side counts as sent, the dropped middle does not', function () {
    const truth: PoisonTruth = { attack: 'lc', targetClass: 1, poisoned: [0, 1], sourceLabels: [1, 1] };
    const cleansed: CleansedEntry[] = [
      drop(1, 'poisoned', 'disruptive target class 1: highest 15% poison score -> removed as poisoned'),
      drop(1, 'uncertain', 'disruptive target class 1: uncertain middle poison score -> dropped'),
      drop(1, 'poisoned', 'disruptive target class 1: highest 15% poison score -> removed as poisoned'),
      keep(1),
      keep(2),
    ];
    const m = cleansingMetrics(cleansed, truth, [1, 2]);
    expect(m.tpr).to.equal(0.5);
    expect(m.fpr).to.equal(1 / 3); // clean samples of flagged classes: 2, 3, 4
    expect(m.relabelAccuracy).to.equal(undefined); // nothing relabelled
    expect(m.targetDetected).to.equal(false); // class 2 flagged too
  });

  it('the sides ml/relabel.ts writes are read the intended way', function () {
    // Class 0 disruptive, class 1 non-disruptive: 20 samples each, alpha 0.15 -> 3 per end.
    const n = 40;
    const labels = Int32Array.from({ length: n }, (_, i) => (i < 20 ? 0 : 1));
    const density = matrix(n, 2);
    const scores = Float32Array.from({ length: n }, (_, i) => i % 20);
    const det = (index: number, kind: ClassKind): ClassDetection => ({
      index,
      count: 20,
      sND: 0,
      ownNLL: 0,
      foreignRank: 0,
      sNDNormalized: 0,
      sD: 0,
      valley: 0,
      ndFlag: kind === 'non-disruptive',
      dFlag: kind === 'disruptive',
      kind,
    });
    const ids = Array.from({ length: n }, (_, i) => `s${i}`);
    const cleansed = splitAndRelabel(ids, labels, density, scores, [det(0, 'disruptive'), det(1, 'non-disruptive')], { alpha: 0.15 });
    const sent = cleansed.map(sentToPoisoned);
    // Disruptive: the 3 highest scores (17, 18, 19) removed as poisoned; middle drops are not sent.
    expect(
      sent
        .slice(0, 20)
        .map((s, i) => (s ? i : -1))
        .filter((i) => i >= 0),
    ).to.deep.equal([17, 18, 19]);
    expect(cleansed.slice(0, 20).filter((e) => e.action === 'drop').length).to.equal(17);
    // Non-disruptive: the 3 lowest scores relabelled.
    expect(
      sent
        .slice(20)
        .map((s, i) => (s ? i : -1))
        .filter((i) => i >= 0),
    ).to.deep.equal([0, 1, 2]);
    // Every entry's side: poisoned end, clean end, uncertain middle, per the class's kind.
    const ends = (low: SampleSide, high: SampleSide) =>
      Array.from({ length: 20 }, (_, r): SampleSide => (r < 3 ? low : r >= 17 ? high : 'uncertain'));
    expect(cleansed.map((e) => e.side)).to.deep.equal([...ends('clean', 'poisoned'), ...ends('poisoned', 'clean')]);
  });

  it('reads side, never the reason text or the action alone', function () {
    const truth: PoisonTruth = { attack: 'lc', targetClass: 1, poisoned: [0, 1], sourceLabels: [1, 1] };
    // Reasons that say the opposite of the side: the side wins.
    const cleansed: CleansedEntry[] = [
      drop(1, 'poisoned', 'some baseline: outlier'),
      drop(1, 'uncertain', 'removed as poisoned'),
      drop(1, 'uncertain', 'removed as poisoned'),
    ];
    const m = cleansingMetrics(cleansed, truth, [1]);
    expect(m.tpr).to.equal(0.5);
    expect(m.fpr).to.equal(0);
  });

  it('fails loudly on an entry without a side (a manifest from before the field)', function () {
    const truth: PoisonTruth = { attack: 'blend', targetClass: 0, poisoned: [0], sourceLabels: [4] };
    const legacy = JSON.parse('{"id":"a","label":0,"action":"relabel","newLabel":4,"reason":"relabelled"}') as CleansedEntry;
    expect(() => cleansingMetrics([legacy], truth, [0])).to.throw(/entry a has side undefined.*rerun the relabel stage/);
  });

  it('undetected target: poisoned samples are kept, TPR 0, FPR undefined', function () {
    const truth: PoisonTruth = { attack: 'blend', targetClass: 0, poisoned: [2], sourceLabels: [4] };
    const m = cleansingMetrics([keep(1), keep(0), keep(0)], truth, []);
    expect(m).to.deep.equal({ tpr: 0, fpr: undefined, relabelAccuracy: undefined, targetDetected: false });
  });

  it('fails loudly when manifest and truth are not aligned', function () {
    const truth: PoisonTruth = { attack: 'blend', targetClass: 0, poisoned: [1], sourceLabels: [4] };
    expect(() => cleansingMetrics([keep(0), keep(4)], truth, [0])).to.throw(/entry 1 .* label 4.*not in the same order/);
    expect(() => cleansingMetrics([keep(0)], truth, [0])).to.throw(/poisoned index 1 outside the manifest of 1/);
    expect(() => cleansingMetrics([keep(0), keep(0)], { ...truth, sourceLabels: [] }, [0])).to.throw(
      /1 poisoned indices but 0 source labels/,
    );
  });
});
