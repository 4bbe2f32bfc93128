import { expect } from 'chai';
import { selectBackend } from '../../backend/backend.js';
import { defaultAuditConfig, type DetectionConfig } from '../../ml/config.js';
import type { CleansedEntry } from '../../ml/audit-report.js';
import { densityMatrix } from '../../ml/density.js';
import { detectTargets, findValley, ndStatistics, normaliseND, type ClassDetection } from '../../ml/detect.js';
import { trainClassFlow } from '../../ml/flow.js';
import { matrix, selectRows, type Matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { splitAndRelabel, splitSize } from '../../ml/relabel.js';
import { poisonScores } from '../../ml/score.js';
import { detection as detectionOf } from './fixtures.js';

const detection: DetectionConfig = defaultAuditConfig.detection;
const relabel = defaultAuditConfig.relabel;

// ---- synthetic class-conditional Gaussian features ----

const C = 8;
const D = 12;
const PER_CLASS = 200;

interface Synthetic {
  features: Matrix;
  labels: Int32Array;
  /** Source class of each poisoned sample (-1: clean). */
  source: Int32Array;
}

/**
 * C classes, N(mean_c, I) in D dims with means N(0, 1.2^2) per dim. 'non-disruptive': 10% of
 * the set drawn from the other classes' distributions and labelled 0. 'disruptive': 25% of
 * class 0's size added as a tight cluster far from every class, labelled 0.
 */
function synthetic(kind: 'clean' | 'non-disruptive' | 'disruptive', seed: number): Synthetic {
  const rng = new Rng(seed);
  const means = Array.from({ length: C }, () => Array.from({ length: D }, () => 1.2 * rng.normal()));
  const extra = kind === 'non-disruptive' ? Math.round(0.1 * C * PER_CLASS) : kind === 'disruptive' ? Math.round(0.25 * PER_CLASS) : 0;
  const n = C * PER_CLASS + extra;
  const x = new Float32Array(n * D);
  const labels = new Int32Array(n);
  const source = new Int32Array(n).fill(-1);
  const far = Array.from({ length: D }, () => 8 + rng.normal());
  for (let i = 0; i < n; i++) {
    if (i < C * PER_CLASS) {
      labels[i] = i % C;
      for (let j = 0; j < D; j++) x[i * D + j] = means[labels[i]][j] + rng.normal();
    } else if (kind === 'non-disruptive') {
      const k = 1 + ((i - C * PER_CLASS) % (C - 1));
      source[i] = k;
      for (let j = 0; j < D; j++) x[i * D + j] = means[k][j] + rng.normal();
    } else {
      source[i] = 0;
      for (let j = 0; j < D; j++) x[i * D + j] = far[j] + 0.3 * rng.normal();
    }
  }
  // Poisoned samples carry the target label 0; shuffle so they are not all at the end.
  const order = rng.permutation(n);
  const out: Synthetic = { features: selectRows(matrix(n, D, x), order), labels: new Int32Array(n), source: new Int32Array(n) };
  order.forEach((o, i) => {
    out.labels[i] = source[o] >= 0 ? 0 : labels[o];
    out.source[i] = source[o];
  });
  return out;
}

/** Trains one small flow per class and returns the density matrix. */
async function densities(s: Synthetic): Promise<Matrix> {
  const flows = [];
  for (let y = 0; y < C; y++) {
    const rows: number[] = [];
    s.labels.forEach((l, i) => l === y && rows.push(i));
    flows.push((await trainClassFlow(selectRows(s.features, rows), { epochs: 6, batchSize: 32, lr: 3e-3, hidden: 16 }, 100 + y)).flow);
  }
  const d = densityMatrix(flows, s.features);
  flows.forEach((f) => f.dispose());
  return d;
}

const flagged = (dets: ClassDetection[]) => dets.filter((d) => d.kind !== 'clean').map((d) => d.index);

describe('target detection on synthetic class-conditional Gaussians (real flows)', function () {
  before(async () => {
    await selectBackend('cpu', 'training', () => {});
  });

  it('flags nothing on a clean set', async () => {
    const s = synthetic('clean', 1);
    const dets = detectTargets(await densities(s), s.labels, detection);
    expect(flagged(dets), JSON.stringify(dets.map((d) => [d.sNDNormalized.toFixed(2), d.sD.toFixed(3)]))).to.deep.equal([]);
    expect(dets.map((d) => d.count)).to.deep.equal(new Array(C).fill(PER_CLASS));
  });

  it('flags only class 0, as non-disruptive, and relabels most poisoned samples to their source class', async () => {
    const s = synthetic('non-disruptive', 2);
    const density = await densities(s);
    const dets = detectTargets(density, s.labels, detection);
    expect(flagged(dets), JSON.stringify(dets.map((d) => [d.sNDNormalized.toFixed(2), d.sD.toFixed(3)]))).to.deep.equal([0]);
    expect(dets[0].kind).to.equal('non-disruptive');
    expect(dets[0].ndFlag).to.equal(true);

    const ids = Array.from(s.labels, (_, i) => `img-${i}`);
    const entries = splitAndRelabel(ids, s.labels, density, poisonScores(density, s.labels), dets, relabel);
    const poisoned = Array.from(s.source.keys()).filter((i) => s.source[i] >= 0);
    const relabelled = entries.filter((e) => e.action === 'relabel');
    // Class 0 holds 200 clean + 160 poisoned samples: the lowest 15% (54) should be poisoned ones
    // and (generative classification) go back to their source class.
    expect(relabelled).to.have.length(splitSize(PER_CLASS + poisoned.length, relabel.alpha));
    const correct = relabelled.filter((e) => s.source[Number(e.id.slice(4))] === e.newLabel).length;
    expect(correct / relabelled.length).to.be.above(0.8);
  });

  it('flags only class 0, as disruptive, and removes (never relabels) the far cluster', async () => {
    const s = synthetic('disruptive', 3);
    const density = await densities(s);
    // The subject here is the disruptive test and the removal, so the non-disruptive statistic is
    // pinned to robust-z. In this geometry class 1's mean lies near the others', so its flow is
    // a good second explanation of every class: robust-z puts it at -2.17, rank-z at -2.61 (a
    // false flag). Both statistics share that limit on well-separated Gaussian classes; on
    // SimCLR features rank-z had none in 70 sets (docs/nd-normalization.md).
    const dets = detectTargets(density, s.labels, { ...detection, ndNormalization: 'robust-z' });
    expect(flagged(dets), JSON.stringify(dets.map((d) => [d.sNDNormalized.toFixed(2), d.sD.toFixed(3)]))).to.deep.equal([0]);
    expect(dets[0].kind).to.equal('disruptive');
    expect(dets[0].dFlag).to.equal(true);
    // 50 of 250 class-0 samples are the cluster: S_D should see about that fraction.
    expect(dets[0].sD).to.be.closeTo(0.2, 0.03);

    const ids = Array.from(s.labels, (_, i) => `img-${i}`);
    const entries = splitAndRelabel(ids, s.labels, density, poisonScores(density, s.labels), dets, relabel);
    expect(entries.filter((e) => e.action === 'relabel')).to.have.length(0);
    const poisoned = Array.from(s.source.keys()).filter((i) => s.source[i] >= 0);
    // The cluster has the highest scores: the top 15% (38 samples) removed are all cluster samples.
    const top = entries.filter((e) => e.action === 'drop' && /highest/.test(e.reason));
    expect(top).to.have.length(splitSize(PER_CLASS + poisoned.length, relabel.alpha));
    for (const e of top) expect(s.source[Number(e.id.slice(4))]).to.equal(0);
    // And none of the cluster is kept.
    for (const i of poisoned) expect(entries[i].action).to.equal('drop');
  });
});

describe('non-disruptive statistics and normalisations', () => {
  // 3 samples per class, 4 classes; log densities chosen so that flow 0 explains foreign samples
  // best (S_ND(0) lowest).
  function toy(): { density: Matrix; labels: Int32Array } {
    const labels = Int32Array.from([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    const d = new Float32Array(12 * 4);
    labels.forEach((y, i) => {
      for (let c = 0; c < 4; c++) d[i * 4 + c] = c === y ? -10 : c === 0 ? -12 : -20 - c;
    });
    return { density: matrix(12, 4, d), labels };
  }

  it('computes mean foreign and own NLL per class', () => {
    const { density, labels } = toy();
    const { sND, ownNLL, count } = ndStatistics(density, labels);
    expect(count).to.deep.equal([3, 3, 3, 3]);
    expect(ownNLL).to.deep.equal([10, 10, 10, 10]);
    expect(sND[0]).to.equal(12);
    // Flow 1 on classes 0, 2, 3: -21 each.
    expect(sND[1]).to.equal(21);
    expect(sND[3]).to.equal(23);
  });

  it('puts the class whose flow explains foreign samples best lowest under every method', () => {
    const stats = ndStatistics(toy().density, toy().labels);
    const ratio = normaliseND(stats, 'median-ratio');
    expect(ratio[0]).to.be.closeTo(12 / 22, 1e-9);
    const gap = normaliseND(stats, 'own-gap');
    expect(gap[0]).to.be.closeTo(2 / 12, 1e-9);
    const z = normaliseND(stats, 'robust-z');
    // Others 21, 22, 23: median 22, MAD 1 -> z = (12 - 22) / 1.4826.
    expect(z[0]).to.be.closeTo(-10 / 1.4826, 1e-9);
    const rank = normaliseND(stats, 'rank-z');
    // Mean foreign ranks 0, 1/3, 2/3, 1 (below): others' median 2/3, MAD 1/3.
    expect(rank[0]).to.be.closeTo(-2 / 1.4826, 1e-9);
    for (const v of [ratio, gap, z, rank]) expect(v.indexOf(Math.min(...v))).to.equal(0);
  });

  it('ranks each flow among the flows foreign to each sample, ties sharing their rank (known answer)', () => {
    // Flow 0 is the best foreign flow on every sample; flow 3 the worst on every sample it is foreign to.
    expect(ndStatistics(toy().density, toy().labels).foreignRank).to.deep.equal([0, 1 / 3, 2 / 3, 1]);
    // Three classes, one sample of class 2 on which flows 0 and 1 tie: both get rank 0.5.
    const tie = ndStatistics(matrix(3, 3, Float32Array.from([0, -1, -2, -1, 0, -3, -4, -4, 0])), Int32Array.from([0, 1, 2]));
    // Flow 0: rank 0 on sample 1 (-1 > -3), 0.5 on sample 2; flow 1: 0 on sample 0, 0.5 on sample 2; flow 2: 1 on samples 0 and 1.
    expect(tie.foreignRank).to.deep.equal([0.25, 0.25, 1]);
    // Two classes: one foreign flow per sample, nothing to compare.
    expect(ndStatistics(matrix(2, 2, Float32Array.from([0, -5, -5, 0])), Int32Array.from([0, 1])).foreignRank).to.deep.equal([0.5, 0.5]);
  });

  it('refuses median-ratio on negative NLLs, naming the alternatives', () => {
    expect(() => normaliseND({ sND: [-5, -6, -7], ownNLL: [-9, -9, -9], foreignRank: [0, 0, 0] }, 'median-ratio')).to.throw(/own-gap/);
  });
});

describe('detectTargets on a constructed density matrix', () => {
  // These check how the two tests interact (exclusion of the far cluster, precedence), not the
  // S_ND scale: pinned to 'own-gap', because a robust z-score over three near-identical
  // constructed classes divides by a MAD of noise.
  const pinned: DetectionConfig = { ...detection, ndNormalization: 'own-gap', betaND: 0.4 };
  // 4 classes x 100 samples. Own log density -5 (+ noise); foreign -20 (+ noise). Class 0's last
  // 20 samples lie outside every class: each other flow extrapolates differently (-300, -1000,
  // -3000). With `ndLow`, flow 0 also explains foreign samples well (-8): a non-disruptive signal.
  function build(ndLow: boolean) {
    const rng = new Rng(5);
    const n = 400;
    const labels = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 100));
    const d = new Float32Array(n * 4);
    const outlier = (i: number) => labels[i] === 0 && i % 100 >= 80;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 4; c++) {
        let v = c === labels[i] ? -5 : c === 0 && ndLow ? -8 : -20;
        if (outlier(i) && c !== 0) v = [0, -300, -1000, -3000][c];
        d[i * 4 + c] = v + rng.normal();
      }
    }
    return { density: matrix(n, 4, d), labels, outlier };
  }

  it('flags the far cluster as disruptive and leaves it out of the non-disruptive statistics', () => {
    const { density, labels, outlier } = build(false);
    const dets = detectTargets(density, labels, pinned);
    expect(dets.map((x) => x.kind)).to.deep.equal(['disruptive', 'clean', 'clean', 'clean']);
    expect(dets[0].sD).to.equal(0.2);
    expect(dets[0].count).to.equal(100);
    // The statistics equal those of the set without the 20 outliers.
    const keep = Array.from(labels.keys()).filter((i) => !outlier(i));
    const ref = ndStatistics(
      selectRows(density, keep),
      labels.filter((_, i) => !outlier(i)),
    );
    dets.forEach((x, y) => {
      expect(x.sND).to.be.closeTo(ref.sND[y], 1e-9);
      expect(x.ownNLL).to.be.closeTo(ref.ownNLL[y], 1e-9);
    });
    // Without the exclusion the outliers would dominate: flow 3's foreign NLL would be far above 20.
    expect(ndStatistics(density, labels).sND[3]).to.be.above(100);
  });

  it("calls a class flagged by both tests 'disruptive'", () => {
    const { density, labels } = build(true);
    const dets = detectTargets(density, labels, pinned);
    expect(dets[0].ndFlag).to.equal(true);
    expect(dets[0].dFlag).to.equal(true);
    expect(dets[0].kind).to.equal('disruptive');
    expect(dets.slice(1).every((x) => x.kind === 'clean')).to.equal(true);
  });
});

describe('findValley (disruptive test threshold mu_y)', () => {
  const normals = (n: number, mean: number, sd: number, rng: Rng) => Array.from({ length: n }, () => mean + sd * rng.normal());

  it('finds no valley in a unimodal sample, even a skewed one with a sparse left tail', () => {
    const rng = new Rng(1);
    expect(findValley(normals(2000, 0, 1, rng), 30, 0.75).fraction).to.be.below(0.01);
    // Log-density-like values: -chi^2_16 / 2, long left tail, few hundred samples.
    for (let seed = 0; seed < 10; seed++) {
      const r = new Rng(100 + seed);
      const v = Array.from({ length: 300 }, () => -0.5 * normals(16, 0, 1, r).reduce((s, x) => s + x * x, 0));
      expect(findValley(v, 30, 0.75).fraction, `seed ${seed}`).to.be.below(0.05);
    }
  });

  it('puts mu between the modes of a bimodal sample, not in an empty bin left of the small mode', () => {
    const rng = new Rng(2);
    // 10% at -8 (poisoned), 90% at 0, plus 3 stragglers far left that leave empty bins.
    const v = [...normals(900, 0, 1, rng), ...normals(100, -8, 0.5, rng), -14, -14.2, -13.9];
    const { valley, fraction } = findValley(v, 30, 0.75);
    expect(valley).to.be.within(-6.5, -3);
    expect(fraction).to.be.closeTo(103 / 1003, 0.005);
  });

  it('is not fooled by a few far outliers (outlier-tailed samples)', () => {
    const rng = new Rng(3);
    // Clean class with 1.5% scattered far-left outliers: below beta_D.
    const clean = [...normals(985, 0, 1, rng), ...Array.from({ length: 15 }, () => rng.uniform(-30, -10))];
    expect(findValley(clean, 30, 0.75).fraction).to.be.at.most(0.015);
    // Poisoned mode at -8 plus 1% outliers at -20: mu still separates the poisoned mode.
    const poisoned = [...normals(890, 0, 1, rng), ...normals(100, -8, 0.5, rng), ...normals(10, -20, 0.2, rng)];
    const { valley, fraction } = findValley(poisoned, 30, 0.75);
    expect(valley).to.be.within(-6.5, -3);
    expect(fraction).to.be.closeTo(0.11, 0.005);
  });

  it('only searches left of lambda', () => {
    const rng = new Rng(4);
    // Poisoned mode at -8, main mode at 0: the gap spans roughly 0.25..0.55 of the [0, 1] axis.
    const v = [...normals(800, 0, 1, rng), ...normals(200, -8, 0.5, rng)];
    expect(findValley(v, 30, 0.75).fraction).to.be.closeTo(0.2, 0.005);
    // lambda 0.1 only lets the rising left flank of the poisoned mode be candidates: no valley.
    expect(findValley(v, 30, 0.1).bin).to.equal(-1);
  });

  it('rejects bad parameters and non-finite values', () => {
    expect(() => findValley([1, 2, 3], 2, 0.75)).to.throw(/bins/);
    expect(() => findValley([1, 2, 3], 30, 0)).to.throw(/lambda/);
    expect(() => findValley([1, NaN, 3], 30, 0.75)).to.throw(/value 1/);
    expect(findValley([5, 5, 5], 30, 0.75).bin).to.equal(-1);
  });
});

describe('splitAndRelabel', () => {
  // 3 classes. Class 0 (flagged) has 88 clean samples and 12 poisoned from classes 1 and 2;
  // classes 1 and 2 (unflagged) have 50 each.
  function setup() {
    const rng = new Rng(9);
    const labels: number[] = [];
    const source: number[] = [];
    const rows: number[][] = [];
    for (let i = 0; i < 100; i++) {
      const p = i % 8 === 3 && source.filter((s) => s >= 0).length < 12 ? 1 + (i % 2) : -1;
      labels.push(0);
      source.push(p);
      const own = p >= 0 ? -9 + rng.normal() : -3 + rng.normal();
      rows.push([own, p === 1 ? -4 : -12 + rng.normal(), p === 2 ? -4 : -12 + rng.normal()]);
    }
    for (let i = 0; i < 100; i++) {
      const y = 1 + (i % 2);
      labels.push(y);
      source.push(-1);
      rows.push([-12 + rng.normal(), y === 1 ? -3 : -12, y === 2 ? -3 : -12]);
    }
    const density = matrix(rows.length, 3, Float32Array.from(rows.flat()));
    const lab = Int32Array.from(labels);
    return { density, labels: lab, source, ids: labels.map((_, i) => `s${i}`), scores: poisonScores(density, lab) };
  }
  const det = detectionOf;
  const count = (es: CleansedEntry[], action: string, label?: number) =>
    es.filter((e) => e.action === action && (label === undefined || e.label === label)).length;

  it('non-disruptive: one entry per sample in order, alpha-sized ends, poisoned relabelled to their source', () => {
    const { density, labels, source, ids, scores } = setup();
    const dets = [det(0, 'non-disruptive'), det(1, 'clean'), det(2, 'clean')];
    const es = splitAndRelabel(ids, labels, density, scores, dets, relabel, ['airplane', 'automobile', 'bird']);
    expect(es.map((e) => e.id)).to.deep.equal(ids);
    expect(es.every((e, i) => e.label === labels[i] && e.score === scores[i])).to.equal(true);
    expect(count(es, 'relabel', 0)).to.equal(15);
    expect(count(es, 'keep', 0)).to.equal(15);
    expect(count(es, 'drop', 0)).to.equal(70);
    // Sides follow the split: relabelled = poisoned, kept end = clean, dropped middle = uncertain.
    expect(
      es.filter((e) => e.label === 0).every((e) => e.side === { relabel: 'poisoned', keep: 'clean', drop: 'uncertain' }[e.action]),
    ).to.equal(true);
    // Unflagged classes are kept whole, as clean.
    expect(count(es, 'keep') - count(es, 'keep', 0)).to.equal(100);
    expect(es.filter((e) => e.label !== 0).every((e) => e.side === 'clean')).to.equal(true);
    const poisoned = source.map((s, i) => (s >= 0 ? i : -1)).filter((i) => i >= 0);
    expect(poisoned).to.have.length(12);
    const right = poisoned.filter((i) => es[i].action === 'relabel' && es[i].newLabel === source[i]).length;
    expect(right / poisoned.length).to.be.above(0.8);
    const r = es.find((e) => e.action === 'relabel')!;
    expect(r.reason).to.match(/non-disruptive target airplane \(0\): lowest 15% poison score -> relabelled to (automobile|bird)/);
    expect(es.find((e) => e.label === 1)!.reason).to.match(/automobile \(1\) not flagged/);
  });

  it('disruptive: the highest-score end is removed, nothing is relabelled', () => {
    const { density, labels, ids } = setup();
    // Make 10 samples of class 0 a disruptive cluster: high own density, nothing else explains them.
    const d = Float32Array.from(density.data);
    for (let i = 0; i < 10; i++) d.set([-2, -40, -40], i * 3);
    const dm = matrix(density.rows, 3, d);
    const es = splitAndRelabel(
      ids,
      labels,
      dm,
      poisonScores(dm, labels),
      [det(0, 'disruptive'), det(1, 'clean'), det(2, 'clean')],
      relabel,
    );
    expect(count(es, 'relabel')).to.equal(0);
    for (let i = 0; i < 10; i++) {
      expect(es[i].action).to.equal('drop');
      expect(es[i].reason).to.match(/disruptive target class 0: highest 15% poison score -> removed/);
    }
    expect(count(es, 'keep', 0)).to.equal(15);
    expect(count(es, 'drop', 0)).to.equal(85);
    // Both the removed end and the middle are drops; only `side` tells them apart.
    const sides = (side: string) => es.filter((e) => e.label === 0 && e.side === side).length;
    expect([sides('poisoned'), sides('clean'), sides('uncertain')]).to.deep.equal([15, 15, 70]);
    for (let i = 0; i < 10; i++) expect(es[i].side).to.equal('poisoned');
  });

  it('builds the relabelling model from exactly the rows it kept as clean, and relabels with its choices', () => {
    const { density, labels, ids, scores } = setup();
    const dets = [det(0, 'non-disruptive'), det(1, 'clean'), det(2, 'clean')];
    let fittedOn: readonly number[] = [];
    const asked: number[][] = [];
    const es = splitAndRelabel(ids, labels, density, scores, dets, relabel, undefined, (clean) => {
      fittedOn = clean;
      return {
        choose: (rows, y) => {
          asked.push([y, ...rows]);
          return rows.map((i) => (i % 2 ? 1 : 2));
        },
      };
    });
    // The unflagged classes whole and the flagged class's kept end: never D^_P or the middle.
    expect(fittedOn).to.deep.equal(es.flatMap((e, i) => (e.side === 'clean' ? [i] : [])));
    expect(fittedOn).to.have.length(100 + 15);
    // One call per target class, with its D^_P rows; their new labels are the model's.
    expect(asked.map((a) => a[0])).to.deep.equal([0]);
    expect(asked[0].slice(1).sort((a, b) => a - b)).to.deep.equal(es.flatMap((e, i) => (e.action === 'relabel' ? [i] : [])));
    for (const e of es.filter((x) => x.action === 'relabel')) expect(e.newLabel).to.equal(Number(e.id.slice(1)) % 2 ? 1 : 2);
    // A model that answers the target class itself is a bug, not a relabel.
    expect(() =>
      splitAndRelabel(ids, labels, density, scores, dets, relabel, undefined, () => ({ choose: (rows, y) => rows.map(() => y) })),
    ).to.throw(/relabel model chose class 0 for sample \d+ of class 0/);
  });

  it('rounds alpha * count and validates its inputs', () => {
    expect(splitSize(101, 0.15)).to.equal(15);
    expect(splitSize(7, 0.15)).to.equal(1);
    const { density, labels, ids, scores } = setup();
    expect(() => splitAndRelabel(ids.slice(1), labels, density, scores, [], relabel)).to.throw(/must agree/);
    expect(() => splitAndRelabel(ids, labels, density, scores, [], { alpha: 0.6 })).to.throw(/alpha/);
  });
});
