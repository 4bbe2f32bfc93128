// Wall time of a fully cached `npm run demo` (every stage a cache hit, the embedded server
// already up), median of --runs, for the compiled build (dist/, what the launcher runs when it
// is fresh) and for the TypeScript sources through tsx (BACKDOOR_AUDIT_SOURCES=1), with where
// the time goes: npm's own start (`npm run env`), node's, the launcher plus the CLI's imports
// (`--help`), the workflow (first to last event of its history) and the rest (pipeline file,
// connection, workers, exit).
// Then, unless --skip-executors, the Temporal pipeline against the in-process executor on the
// same pipeline (bench/executors.ts, run as it is). Writes bench/results/startup-<date>.json.
//
//   npm run bench -- startup [--runs 5] [--skip-executors] [--skip-sources]
import { execFile, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { cliEntry } from '../bin/dist.js';
import { embeddedPort } from '../client/connection.js';
import { repoRoot } from '../data/paths.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    runs: { type: 'string', default: '5' },
    'skip-executors': { type: 'boolean', default: false },
    'skip-sources': { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`bench startup: --runs must be a positive integer, got ${values.runs}`);

const execFileP = promisify(execFile);
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number) => Math.round(x * 1000) / 1000;

/** Wall seconds of a command run in the checkout; its stderr for the caller. */
async function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ s: number; stderr: string }> {
  const t0 = performance.now();
  const { stderr } = await execFileP(cmd, args, { cwd: repoRoot, env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  return { s: (performance.now() - t0) / 1000, stderr };
}

/** Seconds from the first to the last event of a workflow's history. */
async function workflowSeconds(client: Client, workflowId: string): Promise<number> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const ms = (e: NonNullable<typeof events>[number]) => Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
  return events?.length ? (ms(events.at(-1)!) - ms(events[0]!)) / 1000 : NaN;
}

interface Breakdown {
  /** Median seconds of each part, over `runs` runs. */
  total: number;
  nodeStart: number;
  /** What `npm run` adds before node starts (npm is a node process itself). */
  npm: number;
  launcherAndImports: number;
  workflow: number;
  rest: number;
  runs: number[];
  /** Runs in which the launcher ran the sources (a source changed after the build). */
  ranSources: number;
}

async function measure(client: Client, env: NodeJS.ProcessEnv, before: () => Promise<unknown> = async () => undefined): Promise<Breakdown> {
  const node: number[] = [];
  const npmRun: number[] = [];
  const help: number[] = [];
  const total: number[] = [];
  const workflow: number[] = [];
  let ranSources = 0;
  for (let i = 0; i < runs; i++) {
    await before();
    node.push((await timed(process.execPath, ['-e', '0'], env)).s);
    npmRun.push((await timed(npm, ['run', '--silent', 'env'], env)).s); // npm's built-in script: npm alone
    help.push((await timed(process.execPath, ['bin/backdoor-audit.js', '--help'], env)).s);
    const run = await timed(npm, ['run', '--silent', 'demo'], env);
    const uncached = run.stderr.split('\n').filter((l) => /^\S+: done /.test(l) && !l.startsWith('report:'));
    if (uncached.length) throw new Error(`bench startup: not a cached run (${uncached.join('; ')}); run \`npm run demo\` once first`);
    const id = /(?:started audit|attached to the running audit) (\S+)/.exec(run.stderr)?.[1];
    if (!id) throw new Error(`bench startup: no workflow id in the demo's output:\n${run.stderr}`);
    if (run.stderr.includes('note: running the TypeScript sources')) ranSources++;
    total.push(run.s);
    workflow.push(await workflowSeconds(client, id));
    console.error(`  run ${i + 1}/${runs}: ${run.s.toFixed(2)} s`);
  }
  const m = { total: median(total), nodeStart: median(node), npm: median(npmRun), help: median(help), workflow: median(workflow) };
  return {
    total: round(m.total),
    nodeStart: round(m.nodeStart),
    npm: round(m.npm - m.nodeStart),
    launcherAndImports: round(m.help - m.nodeStart),
    workflow: round(m.workflow),
    rest: round(m.total - (m.npm - m.nodeStart) - m.help - m.workflow),
    runs: total.map(round),
    ranSources,
  };
}

/**
 * Runs `npm run bench -- executors` as it is and returns what it wrote; it exits 1 when the two
 * executors' outputs differ, which its JSON says (sameCleansed, sameReport, reportDiff).
 */
async function executors(): Promise<unknown> {
  const started = Date.now();
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', 'executors.ts')], {
      cwd: repoRoot,
      stdio: 'inherit',
    });
    child.on('close', resolve);
  });
  const file = join(repoRoot, 'bench', 'results', `executors-${new Date().toISOString().slice(0, 10)}.json`);
  const written = JSON.parse(await readFile(file, 'utf8')) as { date: string };
  if (Date.parse(written.date) < started) throw new Error(`bench executors exited with ${code} before writing ${file}`);
  return { ...written, exitCode: code };
}

/** Builds dist/ when it is not a build of the sources (they may change while this runs); whether it now is. */
async function ensureBuild(): Promise<boolean> {
  if (cliEntry().compiled) return true;
  console.error('  dist/ is not a build of the sources: npm run build');
  await execFileP(npm, ['run', '--silent', 'build'], { cwd: repoRoot }).catch((err: unknown) =>
    console.error(`  build failed: ${(err as Error).message.split('\n')[0]}`),
  );
  return cliEntry().compiled;
}

const compiled = await ensureBuild();
console.error('filling the cache (one `npm run demo`)');
await timed(npm, ['run', '--silent', 'demo']);
const connection = await Connection.connect({ address: `127.0.0.1:${embeddedPort()}` });
const client = new Client({ connection });
const load = { before: loadavg()[0] };
let dist: Breakdown;
let sources: Breakdown | undefined;
try {
  console.error(`cached demo, ${compiled ? 'compiled build (dist/)' : 'sources (dist/ could not be built)'}:`);
  dist = await measure(client, {}, () => (compiled ? ensureBuild() : Promise.resolve()));
  if (!values['skip-sources']) {
    console.error('cached demo, TypeScript sources through tsx:');
    sources = await measure(client, { BACKDOOR_AUDIT_SOURCES: '1' });
  }
} finally {
  await connection.close();
}
const executorsResult = values['skip-executors'] ? undefined : await executors();

const result = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
  // Other processes' load inflates wall times (2 cores here): medians, and the load beside them.
  loadAverage1m: { before: round(load.before), after: round(loadavg()[0]!) },
  runs,
  target: { cachedDemoSeconds: 2, temporalVsInProcess: 1.1 },
  cachedDemo: { compiled, dist, ...(sources ? { sources } : {}) },
  ...(executorsResult ? { executors: executorsResult } : {}),
};
const row = (name: string, b: Breakdown) =>
  `| ${name} | ${b.total.toFixed(2)} | ${b.npm.toFixed(2)} | ${b.nodeStart.toFixed(2)} | ${b.launcherAndImports.toFixed(2)} | ${b.workflow.toFixed(2)} | ${b.rest.toFixed(2)} |`;
console.log(
  `\n## Fully cached \`npm run demo\`, median of ${runs} (load average ${result.loadAverage1m.before} -> ${result.loadAverage1m.after})`,
);
console.log(
  '| entry | total s | npm s | node start s | launcher + CLI imports s | workflow s | rest s (pipeline, connection, workers, exit) |',
);
console.log('|---|---|---|---|---|---|---|');
console.log(row(compiled ? 'compiled (dist/)' : 'sources (no build)', dist));
if (sources) console.log(row('sources (tsx)', sources));
if (executorsResult) {
  const r = (executorsResult as { ratio: { fresh: number; cached: number } }).ratio;
  console.log(`\nTemporal / in-process (bench executors): fresh ${r.fresh.toFixed(2)}x, cached ${r.cached.toFixed(2)}x (target <= 1.10x)`);
}
const out = join(repoRoot, 'bench', 'results', `startup-${result.date.slice(0, 10)}.json`);
await mkdir(join(repoRoot, 'bench', 'results'), { recursive: true });
await writeFile(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${out}`);
