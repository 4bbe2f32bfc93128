// The stage graph as data (workflows/graph.ts): every declared stage has its implementation and
// its activity, the DAG is well formed, and the README's stage table says what the graph says.
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createActivities } from '../../activities/index.js';
import { STAGE_IMPLS } from '../../activities/stages/index.js';
import { ArtifactStore } from '../../data/artifacts.js';
import { repoRoot } from '../../data/paths.js';
import { AUDIT_DAG, STAGE_SPECS, STAGES } from '../../workflows/graph.js';

describe('the stage graph (workflows/graph.ts)', function () {
  it('has an implementation and an activity for every stage, and nothing else', function () {
    expect(Object.keys(STAGE_IMPLS)).to.have.members(STAGES);
    const activities = createActivities({ store: new ArtifactStore('/nonexistent'), log: () => undefined });
    expect(Object.keys(activities)).to.have.members([...STAGES, 'probe', 'stageGroup']);
  });

  it('implements computeGroup for every grouped per-class stage', async function () {
    for (const stage of STAGES.filter((s) => 'grouped' in STAGE_SPECS[s])) {
      expect('perClass' in STAGE_SPECS[stage], stage).to.equal(true);
      const entry = STAGE_IMPLS[stage];
      const impl = 'load' in entry ? await entry.load() : entry;
      expect(impl.computeGroup, stage).to.be.a('function');
    }
  });

  it('declares each DAG node once, on a known stage, in an order that respects its inputs', function () {
    const ids = AUDIT_DAG.map((n) => n.id);
    expect(new Set(ids).size).to.equal(ids.length);
    AUDIT_DAG.forEach((n, i) => {
      expect(STAGES, n.id).to.include(n.stage);
      for (const from of Object.values(n.inputs))
        for (const id of typeof from === 'string' ? [from] : from) expect(ids.indexOf(id), `${n.id} <- ${id}`).to.be.within(0, i - 1);
    });
    // Exactly the stages with a per-class role have a per-class producer.
    const perClassRoles = STAGES.flatMap((s) => (STAGE_SPECS[s].inputs as readonly string[]).filter((r) => r.endsWith('*')));
    expect(perClassRoles).to.deep.equal(['flow*']);
  });

  it("matches the README's stage table", async function () {
    const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
    for (const s of STAGES) {
      const spec = STAGE_SPECS[s];
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${s}\``));
      expect(row, `README row for ${s}`).to.be.a('string');
      const cells = (row as string).split('|').map((c) => c.trim());
      expect(cells[2], `${s} version`).to.equal(String(spec.version));
      expect(cells[3], `${s} queue`).to.equal(spec.queue);
      expect(cells[4], `${s} timeouts`).to.equal(`${spec.heartbeat} / ${spec.startToClose}`);
      expect(cells[5], `${s} inputs`).to.equal(spec.inputs.map((i) => `\`${i}\``).join(', ') || '—');
    }
  });
});
