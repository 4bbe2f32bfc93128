// The two executors of the one DAG, side by side on one pipeline: the Temporal workflow (a
// fresh dev server on its own port and state folder, in-process workers) and auditDataset in
// this process, each on a fresh artifact store, then each again fully cached. Checks that
// both wrote the same cleansed.jsonl and the same report (timings aside), and writes
// bench/results/executors-<date>.json.
//
//   npm run bench -- executors [--pipeline pipelines/demo.yaml]
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { auditDataset } from '../activities/in-process.js';
import { selectBackend } from '../backend/backend.js';
import { followAudit, startAudit } from '../client/audit.js';
import { loadPipeline } from '../client/pipeline.js';
import { repoRoot } from '../data/paths.js';
import { connectClient, InProcessWorkers, TestServer } from '../test/temporal-helpers.js';
import type { Pipeline } from '../workflows/types.js';

const { values } = parseArgs({ args: process.argv.slice(2), options: { pipeline: { type: 'string', default: 'pipelines/demo.yaml' } } });
const base = await loadPipeline(resolve(values.pipeline));
const work = await mkdtemp(join(tmpdir(), 'bench-executors-'));
const at = (name: string): Pipeline => ({ ...base, output: join(work, `out-${name}`) });
const seconds = async (run: () => Promise<unknown>) => {
  const t0 = performance.now();
  await run();
  return (performance.now() - t0) / 1000;
};

try {
  // Load TensorFlow before timing anything: whichever executor ran first would pay for it.
  await selectBackend(base.audit.backend, 'training');
  const inProcess = {
    fresh: await seconds(() => auditDataset(at('in-process'), { store: join(work, 'store-in-process') })),
    cached: await seconds(() => auditDataset(at('in-process'), { store: join(work, 'store-in-process') })),
  };

  const server = await TestServer.start(work);
  const { client, connection } = await connectClient(server.address);
  const workers = await InProcessWorkers.start(server.address, join(work, 'store-temporal'), { client });
  let temporal: { fresh: number; cached: number };
  try {
    const run = (id: string) => async () => followAudit((await startAudit(client, at('temporal'), id)).handle, () => undefined, 200);
    temporal = { fresh: await seconds(run('bench-fresh')), cached: await seconds(run('bench-cached')) };
  } finally {
    await workers.stop();
    await connection.close();
    await server.stop();
  }

  const read = (name: string, file: string) => readFile(join(work, `out-${name}`, file), 'utf8');
  const sameCleansed = (await read('in-process', 'cleansed.jsonl')) === (await read('temporal', 'cleansed.jsonl'));
  // What the audit found, without what describes the run itself: timings, which stages were
  // cache hits, the Temporal run, and the diff against the previous run in the same folder.
  const withoutTimings = async (name: string) => {
    const {
      timings: _t,
      cachedStages: _c,
      run: _r,
      sinceLastAudit: _s,
      ...found
    } = JSON.parse(await read(name, 'report.json')) as Record<string, unknown>;
    return found;
  };
  const reports = [await withoutTimings('in-process'), await withoutTimings('temporal')] as Record<string, unknown>[];
  const sameReport = JSON.stringify(reports[0]) === JSON.stringify(reports[1]);
  // Which fields differ, when any do (e.g. one that only the Temporal run records).
  const reportDiff = [...new Set([...Object.keys(reports[0]!), ...Object.keys(reports[1]!)])].filter(
    (k) => JSON.stringify(reports[0]![k]) !== JSON.stringify(reports[1]![k]),
  );

  // Artifact keys are content addresses: a stage whose key differs computed something else.
  const keysOf = (r: Record<string, unknown>) => (r.artifacts ?? {}) as Record<string, string>;
  const artifactDiff = Object.keys({ ...keysOf(reports[0]!), ...keysOf(reports[1]!) }).filter(
    (id) => keysOf(reports[0]!)[id] !== keysOf(reports[1]!)[id],
  );
  const result = {
    date: new Date().toISOString(),
    pipeline: values.pipeline,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    seconds: { inProcess, temporal },
    // Temporal wall time over in-process wall time (1.0 = no orchestration cost).
    ratio: { fresh: temporal.fresh / inProcess.fresh, cached: temporal.cached / inProcess.cached },
    sameCleansed,
    sameReport,
    ...(sameReport ? {} : { reportDiff }),
    ...(artifactDiff.length ? { artifactDiff } : {}),
  };
  console.log('| executor | fresh store (s) | fully cached (s) |\n|---|---|---|');
  console.log(`| in-process (auditDataset) | ${inProcess.fresh.toFixed(1)} | ${inProcess.cached.toFixed(1)} |`);
  console.log(`| Temporal (auditWorkflow) | ${temporal.fresh.toFixed(1)} | ${temporal.cached.toFixed(1)} |`);
  console.log(`| ratio Temporal / in-process | ${result.ratio.fresh.toFixed(2)} | ${result.ratio.cached.toFixed(2)} |`);
  console.log(
    `same cleansed.jsonl: ${sameCleansed}; same report.json (run facts aside): ${sameReport}${sameReport ? '' : ` (differs in ${reportDiff.join(', ')})`}${artifactDiff.length ? `; artifact keys differ for ${artifactDiff.join(', ')}` : ''}`,
  );
  const out = join(repoRoot, 'bench', 'results', `executors-${result.date.slice(0, 10)}.json`);
  await mkdir(join(repoRoot, 'bench', 'results'), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${out}`);
  if (!sameCleansed || !sameReport) process.exitCode = 1;
} finally {
  await rm(work, { recursive: true, force: true });
}
