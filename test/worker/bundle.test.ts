// The compiled build's workers load the workflow bundle scripts/build.ts wrote
// (worker/bundle.ts) instead of running webpack at every start: it must be the bundle the
// sources make, and replay a recorded audit like it.
import { expect } from 'chai';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { repoRoot } from '../../data/paths.js';
import { prebuiltWorkflowBundle, WORKFLOW_BUNDLE_FILE, writeWorkflowBundle } from '../../worker/bundle.js';
import { installRuntime, workflowBundle } from '../../worker/index.js';

describe('prebuilt workflow bundle', function () {
  this.timeout(180_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'workflow-bundle-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is not used when the TypeScript sources run (they are bundled as they are)', () => {
    expect(prebuiltWorkflowBundle()).to.equal(undefined);
  });

  it("equals the sources' bundle and replays a recorded cached audit from its file", async () => {
    const file = await writeWorkflowBundle(dir);
    expect(file).to.equal(join(dir, WORKFLOW_BUNDLE_FILE));
    const fromSources = await workflowBundle();
    expect('code' in fromSources && fromSources.code).to.equal(await readFile(file, 'utf8'));

    installRuntime('ERROR');
    const history = JSON.parse(await readFile(join(repoRoot, 'test', 'fixtures', 'histories', 'audit-cached.json'), 'utf8')) as unknown;
    await Worker.runReplayHistory({ workflowBundle: { codePath: file }, replayName: 'prebuilt' }, history, 'replay-cached');
  });
});
