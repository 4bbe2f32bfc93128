// The batched trainer (ml/flow-group.ts) against the single-class one (ml/flow.ts): same
// weights and NLLs per class, exact resume, small classes, the same density matrix.
import { expect } from 'chai';
import * as tf from '@tensorflow/tfjs-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selectBackend } from '../../backend/backend.js';
import { densityMatrix } from '../../ml/density.js';
import { trainClassFlow, type ClassFlow } from '../../ml/flow.js';
import { classGroups, trainFlowGroup, type FlowGroupMember } from '../../ml/flow-group.js';
import { AbortError } from '../../ml/loop.js';
import { matrix, type Matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';

function gaussianRows(n: number, dim: number, rng: Rng, shift = 0): Matrix {
  return matrix(
    n,
    dim,
    Float32Array.from({ length: n * dim }, (_, i) => shift + (1 + (i % dim) * 0.3) * rng.normal()),
  );
}

/** Largest |a - b| / (1 + |b|) over every weight of two flows. */
function maxRelDiff(a: ClassFlow, b: ClassFlow): number {
  const wa = a.toJSON().weights;
  const wb = b.toJSON().weights;
  expect(Object.keys(wa)).to.deep.equal(Object.keys(wb));
  let worst = 0;
  for (const k of Object.keys(wa)) {
    expect(wa[k].length, k).to.equal(wb[k].length);
    for (let i = 0; i < wa[k].length; i++) worst = Math.max(worst, Math.abs(wa[k][i] - wb[k][i]) / (1 + Math.abs(wb[k][i])));
  }
  return worst;
}

const bitEqual = (a: ClassFlow, b: ClassFlow) => {
  const wa = a.toJSON().weights;
  const wb = b.toJSON().weights;
  return Object.keys(wa).every((k) => Buffer.from(wa[k].buffer).equals(Buffer.from(wb[k].buffer)));
};

describe('flow groups: class flows trained in lockstep (ml/flow-group.ts)', function () {
  this.timeout(60_000);
  before(async () => {
    await selectBackend('cpu', 'training', () => {});
  });

  // Batch 8: 40 rows = 5 full batches, 23 = 2 + a trailing 7, 3 = one short batch, 1 = one row.
  const cfg = { epochs: 3, batchSize: 8, lr: 1e-2, hidden: 8 };
  const members: FlowGroupMember[] = [
    { features: gaussianRows(40, 6, new Rng(1)), seed: 10 },
    { features: gaussianRows(23, 6, new Rng(2), 2), seed: 11 },
    { features: gaussianRows(3, 6, new Rng(3), -1), seed: 12 },
    { features: gaussianRows(1, 6, new Rng(4), 5), seed: 13 },
  ];

  it("gives each class the single-class trainer's weights and per-epoch NLLs (float tolerance)", async () => {
    const group = await trainFlowGroup(members, cfg);
    expect(group.flows).to.have.length(members.length);
    expect(group.resumedFromEpoch).to.equal(0);
    for (const [i, m] of members.entries()) {
      const alone = await trainClassFlow(m.features, cfg, m.seed);
      expect(maxRelDiff(group.flows[i], alone.flow), `member ${i} weights`).to.be.below(1e-5);
      expect(group.nll[i]).to.have.length(cfg.epochs);
      group.nll[i].forEach((v, e) => expect(v, `member ${i} epoch ${e + 1} NLL`).to.be.closeTo(alone.nll[e], 1e-4 * (1 + Math.abs(v))));
      // Training moved it: the comparison is not of two untouched initialisations.
      expect(alone.nll[2]).to.not.equal(alone.nll[0]);
      alone.flow.dispose();
    }
    group.flows.forEach((f) => f.dispose());
  });

  it('a group of one is the single-class trainer', async () => {
    const [m] = members;
    const group = await trainFlowGroup([m], cfg);
    const alone = await trainClassFlow(m.features, cfg, m.seed);
    expect(maxRelDiff(group.flows[0], alone.flow)).to.be.below(1e-5);
    [...group.flows, alone.flow].forEach((f) => f.dispose());
  });

  it('gives the density matrix of per-class-trained flows (within float tolerance)', async () => {
    const group = await trainFlowGroup(members, cfg);
    const alone: ClassFlow[] = [];
    for (const m of members) alone.push((await trainClassFlow(m.features, cfg, m.seed)).flow);
    const x = gaussianRows(30, 6, new Rng(9), 1);
    const a = densityMatrix(group.flows, x);
    const b = densityMatrix(alone, x);
    expect([a.rows, a.cols]).to.deep.equal([30, members.length]);
    for (let i = 0; i < a.data.length; i++) expect(a.data[i]).to.be.closeTo(b.data[i], 1e-4 * (1 + Math.abs(b.data[i])));
    [...group.flows, ...alone].forEach((f) => f.dispose());
  });

  describe('checkpoints and cancellation', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'flow-group-ckpt-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('resumes after an abort (members mid-epoch) to bit-identical weights and NLLs of an uninterrupted run', async () => {
      const long = { ...cfg, epochs: 4 };
      const full = await trainFlowGroup(members, long);
      const ac = new AbortController();
      const stopped = await trainFlowGroup(members, long, {
        checkpointDir: dir,
        signal: ac.signal,
        // After group epoch 1 (5 steps) the 23-row member is 2 batches into its second epoch.
        onEpoch: (p) => {
          if (p.epoch === 1) ac.abort();
        },
      }).then(
        () => expect.fail('the aborted run finished'),
        (e: unknown) => e,
      );
      expect(stopped).to.be.instanceOf(AbortError);
      const before = tf.memory().numTensors;
      const resumed = await trainFlowGroup(members, long, { checkpointDir: dir });
      expect(resumed.resumedFromEpoch).to.equal(1);
      expect(resumed.nll).to.deep.equal(full.nll);
      resumed.flows.forEach((f, i) => expect(bitEqual(f, full.flows[i]), `member ${i}`).to.equal(true));
      resumed.flows.forEach((f) => f.dispose());
      expect(tf.memory().numTensors).to.equal(before);
      full.flows.forEach((f) => f.dispose());
    });

    it('extends a finished run with more epochs as the single-class trainer does', async () => {
      (await trainFlowGroup(members, { ...cfg, epochs: 2 }, { checkpointDir: dir })).flows.forEach((f) => f.dispose());
      const more = await trainFlowGroup(members, cfg, { checkpointDir: dir });
      expect(more.resumedFromEpoch).to.equal(2);
      const straight = await trainFlowGroup(members, cfg);
      more.flows.forEach((f, i) => expect(bitEqual(f, straight.flows[i]), `member ${i}`).to.equal(true));
      expect(more.nll).to.deep.equal(straight.nll);
      [...more.flows, ...straight.flows].forEach((f) => f.dispose());
    });

    it("refuses another grouping's checkpoint, naming the folder", async () => {
      (await trainFlowGroup(members, { ...cfg, epochs: 1 }, { checkpointDir: dir })).flows.forEach((f) => f.dispose());
      await trainFlowGroup(members.slice(1), cfg, { checkpointDir: dir }).then(
        () => expect.fail('accepted the checkpoint of another group'),
        (e: Error) =>
          expect(e.message)
            .to.include(dir)
            .and.match(/different run/),
      );
    });

    it('stops at the next step when the signal aborts, with an AbortError and no leak', async () => {
      const before = tf.memory().numTensors;
      const ac = new AbortController();
      let batches = 0;
      const error = await trainFlowGroup(
        members,
        { ...cfg, epochs: 50 },
        {
          signal: ac.signal,
          onBatch: (done) => {
            batches++;
            if (done === 2) ac.abort(new Error('cancelled by test'));
          },
        },
      ).then(
        () => expect.fail('the aborted run finished'),
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(AbortError);
      expect(batches).to.equal(2);
      expect(tf.memory().numTensors).to.equal(before);
    });
  });

  it('rejects members of different widths and an empty group', async () => {
    await trainFlowGroup([members[0], { features: gaussianRows(5, 4, new Rng(1)), seed: 1 }], cfg).then(
      () => expect.fail('accepted mixed widths'),
      (e: Error) => expect(e.message).to.match(/member 1 has 4 columns, member 0 has 6/),
    );
    await trainFlowGroup([], cfg).then(
      () => expect.fail('accepted no members'),
      (e: Error) => expect(e.message).to.match(/no members/),
    );
    await trainFlowGroup([{ features: matrix(0, 6), seed: 1 }], cfg).then(
      () => expect.fail('accepted an empty class'),
      (e: Error) => expect(e.message).to.match(/member 0: no samples/),
    );
  });

  it('classGroups splits classes into consecutive groups of at most the size', () => {
    expect(classGroups(7, 3)).to.deep.equal([[0, 1, 2], [3, 4, 5], [6]]);
    expect(classGroups(2, 10)).to.deep.equal([[0, 1]]);
    expect(() => classGroups(4, 0)).to.throw(/positive integer/);
  });
});
