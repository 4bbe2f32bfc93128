// Stage modules load when their stage needs them (activities/stages/index.ts): a run whose stages
// are all cached must not load the training code's backend, and with it the native TensorFlow.
// The registry's hook lists, which let a cache probe skip loading a stage, must match the stages.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { auditDataset } from '../../activities/in-process.js';
import { ArtifactStore } from '../../data/artifacts.js';
import { STAGE_IMPLS } from '../../activities/stages/index.js';
import { loadPipeline } from '../../client/pipeline.js';
import { repoRoot } from '../../data/paths.js';
import { STAGES } from '../../workflows/graph.js';
import { tinyImageFolder, writeTinyPipeline } from '../temporal-helpers.js';

const run = promisify(execFile);

/**
 * A child process that runs the audit in process against `store` and prints, as JSON, which
 * nodes were cached and every module URL it loaded (recorded by a module-load hook).
 */
function childScript(pipelineFile: string, store: string, loadsFile: string): string {
  const src = (p: string) => JSON.stringify(pathToFileURL(join(repoRoot, p)).href);
  const hook = `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(${JSON.stringify(loadsFile)}, url + '\\n');
  return next(url, context);
}`;
  return `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
const { auditDataset } = await import(${src('activities/in-process.ts')});
const { loadPipeline } = await import(${src('client/pipeline.ts')});
const result = await auditDataset(await loadPipeline(${JSON.stringify(pipelineFile)}), { store: ${JSON.stringify(store)} });
console.log(JSON.stringify(Object.fromEntries(Object.entries(result.outcomes).map(([id, o]) => [id, o.cached]))));
`;
}

describe('lazy stage modules', function () {
  this.timeout(10 * 60_000);

  it("declares each stage's optional hooks as its implementation has them", async () => {
    expect(Object.keys(STAGE_IMPLS)).to.have.members([...STAGES]);
    for (const stage of STAGES) {
      const entry = STAGE_IMPLS[stage];
      if (!('load' in entry)) continue;
      const impl = await entry.load();
      const has = (['deliver', 'identity'] as const).filter((h) => impl[h] !== undefined);
      expect(has, stage).to.deep.equal([...entry.hooks].sort());
    }
  });

  it('a fully cached run loads no tensor backend, no native TensorFlow and no computing stage', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lazy-stages-'));
    try {
      const data = await tinyImageFolder(join(dir, 'data'), 2, 10);
      const file = await writeTinyPipeline(join(dir, 'audit.yaml'), {
        datasetRoot: data,
        datasetName: 'tiny-lazy',
        output: join(dir, 'out'),
        encoderEpochs: 1,
        flowEpochs: 1,
      });
      const store = join(dir, 'store');
      const first = await auditDataset(await loadPipeline(file), { store }); // computes every stage (here: TensorFlow loads)

      const loadsFile = join(dir, 'loads.txt');
      const script = join(dir, 'cached-run.mts');
      await writeFile(script, childScript(file, store, loadsFile));
      const { stdout } = await run(process.execPath, ['--import', 'tsx', script], { cwd: repoRoot, maxBuffer: 16 << 20 });
      const cached = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, boolean>;
      expect(
        Object.entries(cached)
          .filter(([, hit]) => !hit)
          .map(([id]) => id),
      ).to.deep.equal(['report']); // the report is never cached

      const loads = (await readFile(loadsFile, 'utf8')).split('\n').filter(Boolean);
      const loaded = (pattern: RegExp) => loads.filter((url) => pattern.test(url));
      expect(loaded(/activities\/stages\/report\.ts$/), 'the hook sees the stage modules').to.have.length(1);
      expect(loaded(/@tensorflow\/tfjs-node/)).to.deep.equal([]);
      expect(loaded(/\/backend\/backend\.ts$/)).to.deep.equal([]);
      // Stages without an identity hook are probed without loading their modules.
      expect(loaded(/activities\/stages\/(features|flow|density|detect|relabel|attack)\.ts$/)).to.deep.equal([]);

      // A worker restarted between the flows and the density matrix: the density stage is the first
      // of its process to compute, so it must select the backend itself (tfjs-core alone has none).
      await rm(new ArtifactStore(store).dir(first.outcomes['density']!.ref), { recursive: true, force: true });
      const resumed = await run(process.execPath, ['--import', 'tsx', script], { cwd: repoRoot, maxBuffer: 16 << 20 });
      const resumedCached = JSON.parse(resumed.stdout.trim().split('\n').at(-1)!) as Record<string, boolean>;
      expect(resumedCached['density']).to.equal(false);
      expect(resumedCached['features']).to.equal(true);
      expect(resumedCached['flow[0]']).to.equal(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
