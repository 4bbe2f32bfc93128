import { expect } from 'chai';
import { poisonScores } from '../../ml/score.js';
import { histogram, PAGE_LIMITS, reportFigures } from '../../report/figures.js';
import { syntheticAudit } from './fixtures.js';

describe('report figures', function () {
  it('histogram: known counts, the maximum in the last bin, non-finite values left out', function () {
    expect(histogram([0, 1, 2, 3, 4, NaN, -Infinity], 4)).to.deep.equal({ lo: 0, hi: 4, counts: [1, 1, 1, 2] });
    expect(histogram([5, 5], 3)).to.deep.equal({ lo: 5, hi: 5, counts: [2, 0, 0] });
    expect(histogram([], 2).counts).to.deep.equal([0, 0]);
  });

  it('finds the planted target and draws its histograms from every sample of the class', function () {
    const a = syntheticAudit({ classes: 5, perClass: 60 });
    expect(a.report.targetClasses).to.deep.equal([0]);
    expect(a.report.classes[0].kind).to.equal('non-disruptive');
    const f = reportFigures({ ...a, labels: a.source.labels, ids: a.source.ids });
    const scoreOf = (i: number) => poisonScores(a.density, a.source.labels)[i];
    const count0 = a.report.classes[0].count;
    const fd0 = f.foreignDensity.find((x) => x.index === 0);
    expect(fd0?.histogram.counts.reduce((s, c) => s + c, 0)).to.equal(count0);
    expect(fd0?.histogram.counts).to.have.length(a.report.config.detection.bins);
    const ps = f.poisonScore[0];
    const byGroup = Object.fromEntries(ps.histograms.map((h) => [h.group, h.histogram.counts.reduce((s, c) => s + c, 0)]));
    expect(byGroup).to.deep.equal({ poisoned: a.truth.poisoned.length, genuine: count0 - a.truth.poisoned.length });
    // The split lines are the edges of the sides in cleansed.jsonl; non-disruptive: poisoned end lowest.
    const rows = a.cleansed.map((e, i) => ({ e, s: scoreOf(i) })).filter((r) => r.e.label === 0);
    expect(ps.poisonedUpTo).to.equal(Math.max(...rows.filter((r) => r.e.side === 'poisoned').map((r) => r.s)));
    expect(ps.cleanFrom).to.equal(Math.min(...rows.filter((r) => r.e.side === 'clean').map((r) => r.s)));
    expect(ps.poisonedUpTo as number).to.be.below(ps.cleanFrom as number);
    // Thumbnails: the relabelled end, lowest scores first, each with its truth.
    const relabelled = f.thumbnails[0].groups.find((g) => g.side === 'poisoned');
    expect(relabelled?.action).to.equal('relabelled');
    expect(relabelled?.of).to.equal(a.report.classes[0].split.relabelled);
    const scores = relabelled?.shown.map((t) => t.score) ?? [];
    expect(scores).to.deep.equal([...scores].sort((x, y) => x - y));
    expect(relabelled?.shown.every((t) => t.truth !== undefined && t.newLabel !== undefined)).to.equal(true);
    // Every relabelled sample is accounted for in the flows.
    expect(f.relabelFlows.reduce((s, x) => s + x.count, 0)).to.equal(a.report.counts.relabelled);
    expect(f.heatmap.classes).to.deep.equal([0, 1, 2, 3, 4]);
    expect(f.heatmap.mean[1][1]).to.be.closeTo(-50, 1);
  });

  it('caps what it draws for hundreds of classes, the flagged class first', function () {
    this.timeout(60_000);
    const a = syntheticAudit({ classes: 300, perClass: 10 });
    const f = reportFigures({ ...a, labels: a.source.labels, ids: a.source.ids });
    expect(f.foreignDensity).to.have.length(PAGE_LIMITS.histogramClasses);
    expect(f.foreignDensityOf).to.equal(300);
    expect(f.foreignDensity.map((x) => x.index)).to.include(0);
    expect(f.heatmap.classes).to.have.length(PAGE_LIMITS.heatmapClasses);
    expect(f.heatmap.classes[0]).to.equal(0);
    for (const g of f.thumbnails.flatMap((t) => t.groups)) expect(g.shown.length).to.be.at.most(PAGE_LIMITS.thumbnails[g.side]);
  });

  it('refuses artifacts that do not belong together', function () {
    const a = syntheticAudit({ classes: 3, perClass: 10 });
    expect(() => reportFigures({ ...a, labels: a.source.labels, ids: a.source.ids, cleansed: a.cleansed.slice(1) })).to.throw(
      /30 labels, 30 ids, 29 cleansed entries and a 30 x 3 density matrix for 3 classes do not agree/,
    );
  });
});
