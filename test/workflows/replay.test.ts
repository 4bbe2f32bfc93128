// Determinism for audits in flight: histories recorded from real runs (test/fixtures/histories,
// written by test/fixtures/record-histories.ts) are replayed against today's workflow code. A
// change that would make a running audit fail on its next task (a stage added, removed or
// reordered without `patched()`) fails here.
import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { repoRoot } from '../../data/paths.js';
import { installRuntime, workflowBundle } from '../../worker/index.js';

const dir = join(repoRoot, 'test', 'fixtures', 'histories');

describe('workflow replay (recorded histories)', function () {
  this.timeout(120_000);

  it('has the recorded histories of a full audit, a cached re-run, a per-class child, and a grouped audit with its group child', async function () {
    expect((await readdir(dir)).sort()).to.include.members([
      'audit-cached.json',
      'audit-full.json',
      'class-stage-flow.json',
      'audit-grouped.json',
      'class-group-flow.json',
    ]);
  });

  // File -> the workflow id it was recorded under (child workflow ids derive from it).
  const recorded = {
    'audit-full': 'replay-full',
    'audit-cached': 'replay-cached',
    'class-stage-flow': 'replay-full/flow-0',
    'audit-grouped': 'replay-grouped',
    'class-group-flow': 'replay-grouped/flow-0-1',
  };
  for (const [name, workflowId] of Object.entries(recorded)) {
    it(`replays ${name} without nondeterminism`, async function () {
      installRuntime('ERROR');
      // The Temporal CLI's JSON export; the SDK converts it (event ids as strings mark the JSON form).
      const history = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as { events: { eventType: string }[] };
      expect(history.events.length).to.be.greaterThan(10);
      // The recorded run completed: a replay that stops early would prove nothing.
      expect(history.events.at(-1)?.eventType).to.equal('EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED');
      await Worker.runReplayHistory({ workflowBundle: await workflowBundle(), replayName: name }, history, workflowId);
    });
  }
});
