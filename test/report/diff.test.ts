// The diff of two audits (report/diff.ts) on two synthetic audits whose changes are known one
// by one, the empty diff of an audit with itself, and `backdoor-audit diff <dir> <dir>`.
import { expect } from 'chai';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIo } from '../../client/cli.js';
import {
  diffAudits,
  formatDiff,
  isEmptyDiff,
  parseAuditOutputs,
  type AuditDiff,
  type AuditOutputs,
  type DiffableClass,
} from '../../report/diff.js';
import type { CleansedEntry } from '../../ml/audit-report.js';

const CLASSES = ['airplane', 'automobile', 'bird'];

function cls(index: number, o: Partial<DiffableClass>): DiffableClass {
  return { index, name: CLASSES[index]!, count: 4, sND: 80, sNDNormalized: 0, sD: 0, flagged: false, kind: 'clean', ...o };
}

function entry(id: string, label: number, action: CleansedEntry['action'], o: Partial<CleansedEntry> = {}): CleansedEntry {
  const side = action === 'keep' ? 'clean' : action === 'relabel' ? 'poisoned' : 'uncertain';
  return { id, label, action, side, reason: 'test', ...o };
}

function audit(hash: string, classes: DiffableClass[], cleansed: CleansedEntry[], epochs: number): AuditOutputs {
  const counts = { kept: 0, relabelled: 0, dropped: 0 };
  for (const e of cleansed) counts[e.action === 'keep' ? 'kept' : e.action === 'relabel' ? 'relabelled' : 'dropped']++;
  return {
    report: {
      dataset: { name: 'tiny', hash, samples: cleansed.length, classes: CLASSES },
      config: { seed: 0, encoder: { kind: 'simclr', epochs }, detection: { betaND: -2.5, betaD: 0.05 } },
      classes,
      targetClasses: classes.filter((c) => c.flagged).map((c) => c.index),
      counts,
    },
    cleansed,
  };
}

// Night 1: automobile flagged non-disruptive (c0 relabelled to airplane), bird flagged disruptive.
const night1 = audit(
  'a'.repeat(64),
  [
    cls(0, { sND: 80, sNDNormalized: -0.5 }),
    cls(1, { sND: 60, sNDNormalized: -3, flagged: true, kind: 'non-disruptive' }),
    cls(2, { sND: 85, sNDNormalized: 0.8, sD: 0.25, flagged: true, kind: 'disruptive' }),
  ],
  [
    entry('airplane/a0', 0, 'keep'),
    entry('airplane/a1', 0, 'keep'),
    entry('airplane/a2', 0, 'keep'),
    entry('airplane/a3', 0, 'keep'),
    entry('automobile/c0', 1, 'relabel', { newLabel: 0 }),
    entry('automobile/c1', 1, 'drop'),
    entry('automobile/c2', 1, 'keep'),
    entry('automobile/c3', 1, 'keep'),
    entry('bird/b0', 2, 'drop', { side: 'poisoned' }),
    entry('bird/b1', 2, 'drop'),
    entry('bird/b2', 2, 'keep'),
    entry('bird/b3', 2, 'keep'),
  ],
  3,
);

// Night 2: b3 removed, a4 and a5 added (and relabelled), c3's label changed to bird; airplane is
// now flagged non-disruptive, bird no longer flagged; c0 relabelled to bird instead.
const night2 = audit(
  'b'.repeat(64),
  [
    cls(0, { count: 6, sND: 70, sNDNormalized: -3.5, flagged: true, kind: 'non-disruptive' }),
    cls(1, { count: 3, sND: 61, sNDNormalized: -2.75, flagged: true, kind: 'non-disruptive' }),
    cls(2, { count: 4, sND: 84, sNDNormalized: 0.5, sD: 0, flagged: false, kind: 'clean' }),
  ],
  [
    entry('airplane/a0', 0, 'relabel', { newLabel: 1 }),
    entry('airplane/a1', 0, 'drop'),
    entry('airplane/a2', 0, 'keep'),
    entry('airplane/a3', 0, 'keep'),
    entry('airplane/a4', 0, 'relabel', { newLabel: 1 }),
    entry('airplane/a5', 0, 'relabel', { newLabel: 2 }),
    entry('automobile/c0', 1, 'relabel', { newLabel: 2 }),
    entry('automobile/c1', 1, 'drop'),
    entry('automobile/c2', 1, 'keep'),
    entry('automobile/c3', 2, 'keep'),
    entry('bird/b0', 2, 'keep'),
    entry('bird/b1', 2, 'keep'),
    entry('bird/b2', 2, 'keep'),
  ],
  6,
);

const ids = (list: { id: string }[]) => list.map((c) => c.id);

describe('audit diff (report/diff.ts)', function () {
  it('finds exactly the known changes between two synthetic audits', function () {
    const d = diffAudits(night1, night2);
    expect(d.matchedBy).to.equal('id');
    expect(d.samples.added).to.deep.equal(['airplane/a4', 'airplane/a5']);
    expect(d.samples.removed).to.deep.equal(['bird/b3']);
    expect(d.samples.changed).to.deep.equal([]);
    expect(d.samples.labelChanged).to.deep.equal([{ id: 'automobile/c3', before: 'automobile', after: 'bird' }]);
    expect(d.samples.common).to.equal(11);

    expect(d.verdictChanges.map((c) => [c.name, c.verdict, c.kindBefore, c.kindAfter])).to.deep.equal([
      ['airplane', 'flagged', 'clean', 'non-disruptive'],
      ['bird', 'unflagged', 'disruptive', 'clean'],
    ]);
    expect(ids(d.newlyRelabelled)).to.deep.equal(['airplane/a0', 'airplane/a4', 'airplane/a5']);
    expect(d.newlyRelabelled.filter((c) => !c.before)).to.have.length(2);
    expect(d.newlyRelabelled[0]).to.deep.equal({
      id: 'airplane/a0',
      label: 'airplane',
      before: { action: 'keep', side: 'clean' },
      after: { action: 'relabel', side: 'poisoned', newLabel: 'automobile' },
    });
    expect(ids(d.newlyDropped)).to.deep.equal(['airplane/a1']);
    expect(ids(d.restored)).to.deep.equal(['bird/b0', 'bird/b1']);
    expect(d.restored[0]!.before).to.deep.equal({ action: 'drop', side: 'poisoned' });
    expect(ids(d.relabelledElsewhere)).to.deep.equal(['automobile/c0']);
    expect(d.relabelledElsewhere[0]!.after.newLabel).to.equal('bird');
    expect(d.configChanged).to.deep.equal(['encoder']);

    const byName = new Map(d.classes.map((c) => [c.name, c]));
    expect(byName.get('airplane')!.sND).to.deep.equal({ before: 80, after: 70, delta: -10 });
    expect(byName.get('airplane')!.sNDNormalized.delta).to.be.closeTo(-3, 1e-12);
    expect(byName.get('airplane')!.count).to.deep.equal({ before: 4, after: 6, delta: 2 });
    expect(byName.get('automobile')!.verdict).to.equal('unchanged');
    expect(byName.get('automobile')!.sNDNormalized.delta).to.be.closeTo(0.25, 1e-12);
    expect(byName.get('bird')!.sD).to.deep.equal({ before: 0.25, after: 0, delta: -0.25 });
    expect(d.before.targetClasses).to.deep.equal(['automobile', 'bird']);
    expect(d.after.targetClasses).to.deep.equal(['airplane', 'automobile']);
    expect(isEmptyDiff(d)).to.equal(false);

    const text = formatDiff(d);
    expect(text).to.contain('+2 added, -1 removed, 1 with another label, 11 in both');
    expect(text).to.contain('airplane: flagged, non-disruptive (S_ND test)');
    expect(text).to.contain('bird: no longer flagged; was disruptive (S_D test)');
    expect(text).to.contain('newly relabelled: 3 (2 of them new samples)');
    expect(text).to.contain('restored (kept again): 2');
    expect(text).to.match(/airplane\s+4 -> 6 \(\+2\)\s+80\.00 -> 70\.00 \(-10\.00\)/);
  });

  it('sees a sample changed in place only when both audits give content hashes', function () {
    const hashes = (changed: string) => new Map(night1.cleansed.map((e) => [e.id, e.id === changed ? 'new' : `h-${e.id}`]));
    const d = diffAudits({ ...night1, hashes: hashes('') }, { ...night2, hashes: hashes('airplane/a2') });
    expect(d.matchedBy).to.equal('id+hash');
    expect(d.samples.changed).to.deep.equal(['airplane/a2']);
    expect(formatDiff(d)).to.contain('1 changed');
    expect(diffAudits({ ...night1, hashes: hashes('') }, night2).matchedBy).to.equal('id');
  });

  it('gives an empty diff for an audit and itself, also through report.json with NaN statistics', function () {
    const withNaN: AuditOutputs = {
      ...night2,
      report: { ...night2.report, classes: [...night2.report.classes, cls(2, { name: 'empty', count: 0, sNDNormalized: NaN })] },
    };
    const files = (a: AuditOutputs) =>
      parseAuditOutputs(JSON.stringify(a.report), a.cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n', 'x');
    for (const d of [diffAudits(night1, night1), diffAudits(files(withNaN), files(withNaN))]) {
      expect(isEmptyDiff(d)).to.equal(true);
      expect(d.samples.added.length + d.samples.removed.length + d.samples.labelChanged.length).to.equal(0);
      expect(d.verdictChanges).to.deep.equal([]);
      expect(d.newlyRelabelled.length + d.newlyDropped.length + d.restored.length + d.relabelledElsewhere.length).to.equal(0);
      expect(d.configChanged).to.deep.equal([]);
      expect(d.classes.every((c) => c.sND.delta === 0 && c.sD.delta === 0)).to.equal(true);
      expect(formatDiff(d)).to.contain('no changes');
    }
    const nan = diffAudits(files(withNaN), files(withNaN)).classes.find((c) => c.name === 'empty')!;
    expect(nan.sNDNormalized).to.deep.equal({ before: null, after: null, delta: null });
  });

  it('refuses files that are not an audit, naming them', function () {
    expect(() => parseAuditOutputs('{"x": 1}', '', 'night1')).to.throw('night1/report.json: not an audit report');
    expect(() => parseAuditOutputs(JSON.stringify(night1.report), '{"id": 3}\n', 'night1')).to.throw('night1/cleansed.jsonl line 1');
  });

  describe('backdoor-audit diff <dir> <dir>', function () {
    let dir: string;
    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'backdoor-diff-'));
      for (const [name, a] of [
        ['night1', night1],
        ['night2', night2],
      ] as const) {
        await mkdir(join(dir, name));
        await writeFile(join(dir, name, 'report.json'), JSON.stringify(a.report, null, 2));
        await writeFile(join(dir, name, 'cleansed.jsonl'), a.cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
      }
    });
    after(async function () {
      await rm(dir, { recursive: true, force: true });
    });

    function captureIo(): { io: CliIo; out: string[]; err: string[] } {
      const out: string[] = [];
      const err: string[] = [];
      return { io: { out: (t) => void out.push(t), err: (t) => void err.push(t) }, out, err };
    }

    it('prints the text diff, and the AuditDiff with --json, without a server', async function () {
      const text = captureIo();
      expect(await main(['diff', join(dir, 'night1'), join(dir, 'night2')], text.io), text.err.join('\n')).to.equal(0);
      expect(text.err).to.deep.equal([]); // no server was started or asked for
      expect(text.out.join('\n')).to.contain('+2 added, -1 removed').and.contain('airplane: flagged');
      const json = captureIo();
      expect(await main(['diff', join(dir, 'night1'), join(dir, 'night2'), '--json'], json.io)).to.equal(0);
      const d = JSON.parse(json.out.join('\n')) as AuditDiff;
      expect(d.samples.added).to.have.length(2);
      expect(d.newlyRelabelled).to.have.length(3);
      expect(d.verdictChanges).to.have.length(2);
    });
  });
});
