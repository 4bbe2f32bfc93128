// The audit pipeline on a real Temporal dev server (SQLite, loopback): the whole DAG, cache
// hits, partial recomputation, a worker process killed during SimCLR, a server restart, a
// corrupted artifact, attaching to a live run, schedules, search attributes and per-class
// child workflows, and pipeline errors that start nothing. Tests share one server, one
// artifact store and one tiny dataset (3 classes x 12 CIFAR-10 images); none depends on
// another having run: a test that needs the base audit done asks `baseRun()`, which runs it
// once (later calls reuse it), and each test leaves the in-process workers running.
import { expect } from 'chai';
import { readFile, readdir, rm, mkdtemp, writeFile, stat, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CancelledFailure, WorkflowFailedError, type Client, type Connection } from '@temporalio/client';
import { main } from '../../client/cli.js';
import { followAudit, queryProgress, startAudit, type AuditHandle } from '../../client/audit.js';
import { loadPipeline } from '../../client/pipeline.js';
import { ensureSearchAttributes, openTemporal } from '../../client/connection.js';
import { devServerArgs } from '../../client/server.js';
import { scheduleRuns } from '../../client/schedule.js';
import { datasetKey, stageKey, targetClassesKey, verdictKey } from '../../workflows/definitions.js';
import type { AuditProgress, AuditResult, StageProgress } from '../../workflows/types.js';
import type { AuditReport, CleansedEntry } from '../../ml/audit-report.js';
import {
  connectClient,
  freePort,
  InProcessWorkers,
  saveServerEnv,
  stopEmbeddedServer,
  TestServer,
  tinyImageFolder,
  waitFor,
  WorkerProcess,
  writeTinyPipeline,
} from '../temporal-helpers.js';

describe('temporal pipeline (real dev server)', function () {
  this.timeout(300_000);

  let dir: string;
  let server: TestServer;
  let client: Client;
  let connection: Connection;
  let workers: InProcessWorkers | undefined;
  let storeRoot: string;
  let datasetRoot: string;
  const log: string[] = [];
  const savedEnv = { state: process.env.BACKDOOR_AUDIT_STATE };
  const timings: Record<string, number> = {};

  const pipelineFile = (name: string) => join(dir, `${name}.yaml`);
  const stageStates = (p: AuditProgress) => Object.fromEntries(p.stages.map((s: StageProgress) => [s.id, s.state]));
  const cliIo = () => {
    const out: string[] = [];
    const err: string[] = [];
    const progressStream = { isTTY: false, write: (s: string) => (err.push(s), true) } as unknown as NodeJS.WriteStream;
    return { io: { out: (t: string) => void out.push(t), err: (t: string) => void err.push(t), progressStream }, out, err };
  };

  async function runToEnd(file: string): Promise<{ result: AuditResult; progress: AuditProgress; seconds: number; workflowId: string }> {
    const t0 = performance.now();
    const started = await startAudit(client, await loadPipeline(file));
    let progress: AuditProgress | undefined;
    const result = await followAudit(started.handle, (p) => (progress = p ?? progress), 200);
    if (!progress?.done) throw new Error(`${started.workflowId}: no final progress table`);
    return { result, progress, seconds: (performance.now() - t0) / 1000, workflowId: started.workflowId };
  }

  let base: ReturnType<typeof runToEnd> | undefined;
  /** The base audit, run once by whichever test needs it first. */
  const baseRun = () => (base ??= runToEnd(pipelineFile('base')));

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-temporal-'));
    process.env.BACKDOOR_AUDIT_STATE = join(dir, 'state');
    storeRoot = join(dir, 'state', 'artifacts');
    datasetRoot = await tinyImageFolder(join(dir, 'data'), 3, 12);
    server = await TestServer.start(dir);
    ({ client, connection } = await connectClient(server.address));
    workers = await InProcessWorkers.start(server.address, storeRoot, { client, log: (l) => log.push(l) });
    await writeTinyPipeline(pipelineFile('base'), { datasetRoot, datasetName: 'tiny-base', output: join(dir, 'out-base') });
  });

  after(async function () {
    await workers?.stop();
    await connection?.close();
    await server?.stop();
    process.env.BACKDOOR_AUDIT_STATE = savedEnv.state;
    if (savedEnv.state === undefined) delete process.env.BACKDOOR_AUDIT_STATE;
    if (Object.keys(timings).length) console.log(`      timings (s): ${JSON.stringify(timings)}`);
    await rm(dir, { recursive: true, force: true });
  });

  it('runs the whole DAG through the CLI and writes report.json and cleansed.jsonl', async function () {
    await writeTinyPipeline(pipelineFile('cli'), { datasetRoot, datasetName: 'tiny-base', output: join(dir, 'out-cli') });
    const { io, out, err } = cliIo();
    const t0 = performance.now();
    process.env.BACKDOOR_AUDIT_TEMPORAL_UI = 'http://ui.example:8233';
    const code = await main(['run', pipelineFile('cli'), '--address', server.address], io).finally(
      () => delete process.env.BACKDOOR_AUDIT_TEMPORAL_UI,
    );
    timings.firstRun = (performance.now() - t0) / 1000;
    expect(code, err.join('\n')).to.equal(0);
    const report = JSON.parse(await readFile(join(dir, 'out-cli', 'report.json'), 'utf8')) as AuditReport;
    const cleansed = (await readFile(join(dir, 'out-cli', 'cleansed.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as CleansedEntry);
    expect(report.dataset.samples).to.equal(36);
    expect(report.dataset.classes).to.deep.equal(['airplane', 'automobile', 'bird']);
    expect(report.classes).to.have.length(3);
    expect(cleansed).to.have.length(36);
    expect(new Set(cleansed.map((e) => e.id)).size).to.equal(36);
    expect(report.counts.kept + report.counts.relabelled + report.counts.dropped).to.equal(36);
    expect(report.evaluation?.targetDetected).to.be.a('boolean');
    expect(out.join('\n')).to.contain('wrote');
    expect(out.join('\n')).to.match(/verdict: /);
    // The report names its run, and report.html (written beside it) links to it in the UI.
    const workflowId = /(?:started audit|attached to the running audit) (\S+)/.exec(err.join('\n'))?.[1];
    expect(report.run).to.deep.equal({ workflowId, namespace: 'default', uiUrl: 'http://ui.example:8233' });
    const html = await readFile(join(dir, 'out-cli', 'report.html'), 'utf8');
    expect(html).to.include(`href="http://ui.example:8233/namespaces/default/workflows/${workflowId}"`);
    // `report <id> --html` gives the page's path in the artifact store: the same page.
    const page = cliIo();
    expect(await main(['report', workflowId as string, '--html', '--address', server.address], page.io), page.err.join('\n')).to.equal(0);
    expect(await readFile(page.out[0], 'utf8')).to.equal(html);
    // Progress lines reached the (non-TTY) progress stream (cached when another test ran the base audit first).
    expect(err.join('')).to.match(/encoder: (done|cached)/);
  });

  it('shows the run in search attributes, memo and one child workflow per group of classes', async function () {
    const { workflowId, result, progress } = await baseRun();
    const ids = [workflowId];
    const d = await client.workflow.getHandle(ids[0]).describe();
    expect(d.typedSearchAttributes.get(datasetKey)).to.equal('tiny-base');
    expect(d.typedSearchAttributes.get(stageKey)).to.equal('done');
    const verdict = d.typedSearchAttributes.get(verdictKey);
    const targets = result.summary.targetClasses;
    expect(verdict).to.equal(targets.length ? 'poisoned' : 'clean');
    const encoder = progress.stages.find((r) => r.id === 'encoder');
    expect(encoder?.state).to.be.oneOf(['done', 'cached']);
    if (encoder?.state === 'done') expect(encoder).to.include({ epoch: 2, epochs: 2 });
    const status = cliIo();
    expect(await main(['status', ids[0], '--address', server.address], status.io), status.err.join('\n')).to.equal(0);
    expect(status.out.join('\n'))
      .to.match(/encoder\s+(done 2\/2|cached)/)
      .and.match(/flow\[2\]\s+(done|cached)/);
    // An empty keyword list is stored as no value.
    expect(d.typedSearchAttributes.get(targetClassesKey) ?? []).to.deep.equal(targets);
    expect(await d.memo).to.deep.include({ pipeline: 'tiny' });
    const children: string[] = [];
    for await (const wf of client.workflow.list({ query: `BackdoorDataset = "tiny-base" AND BackdoorStage = "flow"` })) {
      if (!wf.workflowId.startsWith(`${ids[0]}/`)) continue; // other tests' audits
      children.push(wf.workflowId);
      expect(wf.type).to.equal('classGroupWorkflow');
    }
    // The flows run in groups of classes (3 classes over the default 2 worker slots: [0, 1] and
    // [2]), one child each, a cached group too (the group's probe finds its classes' artifacts).
    expect(children.sort()).to.deep.equal([`${ids[0]}/flow-0-1`, `${ids[0]}/flow-2-2`]);
    for (const c of children) {
      const child = await client.workflow.getHandle(c).describe();
      expect(child.raw.workflowExecutionInfo?.parentExecution?.workflowId).to.equal(ids[0]);
    }
  });

  it('serves a second run entirely from the cache', async function () {
    await baseRun();
    const { progress, seconds } = await runToEnd(pipelineFile('base'));
    timings.cachedRun = seconds;
    const states = stageStates(progress);
    for (const [id, state] of Object.entries(states)) expect(state, id).to.equal(id === 'report' ? 'done' : 'cached');
    expect(Object.keys(states)).to.include.members([
      'ingest',
      'attack',
      'encoder',
      'features',
      'flow[0]',
      'flow[1]',
      'flow[2]',
      'density',
      'detect',
      'relabel',
      'evaluate',
    ]);
  });

  it('recomputes only the stages downstream of a changed parameter', async function () {
    await writeTinyPipeline(pipelineFile('flow3'), {
      datasetRoot,
      datasetName: 'tiny-base',
      output: join(dir, 'out-flow3'),
      flowEpochs: 3,
    });
    await baseRun();
    const { progress } = await runToEnd(pipelineFile('flow3'));
    const states = stageStates(progress);
    for (const id of ['ingest', 'attack', 'encoder', 'features']) expect(states[id], id).to.equal('cached');
    for (const id of ['flow[0]', 'flow[1]', 'flow[2]', 'density', 'detect', 'relabel', 'evaluate', 'report'])
      expect(states[id], id).to.equal('done');
  });

  it('detects a corrupted artifact by its hash and recomputes it', async function () {
    const key = (await baseRun()).progress.stages.find((r) => r.id === 'features')?.key;
    expect(key).to.be.a('string');
    const features = [key as string];
    const file = join(storeRoot, features[0], 'features.f32');
    const size = (await stat(file)).size;
    const fh = await open(file, 'r+');
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, Math.floor(size / 2));
    byte[0] ^= 0xff;
    await fh.write(byte, 0, 1, Math.floor(size / 2));
    await fh.close();
    const { progress } = await runToEnd(pipelineFile('base'));
    const states = stageStates(progress);
    expect(states.features).to.equal('done');
    expect(states.encoder).to.equal('cached');
    // Same key, same bytes again: everything after it is still a cache hit.
    expect(states.density).to.equal('cached');
    const quarantined = await readdir(join(storeRoot, '.quarantine'));
    expect(quarantined.some((q) => q.startsWith(features[0]))).to.equal(true);
    expect(await artifactsOf(storeRoot, 'features')).to.include(features[0]);
  });

  it('attaches a second run of the same pipeline to the live workflow', async function () {
    await writeTinyPipeline(pipelineFile('attach'), {
      datasetRoot,
      datasetName: 'tiny-base',
      output: join(dir, 'out-attach'),
      flowEpochs: 4,
    });
    const a = cliIo();
    const b = cliIo();
    // No worker for a moment: the first run stays live while the second one arrives.
    await workers?.stop();
    workers = undefined;
    const [codeA, codeB] = await Promise.all([
      main(['run', pipelineFile('attach'), '--detach', '--address', server.address], a.io),
      new Promise((r) => setTimeout(r, 300)).then(() =>
        main(['run', pipelineFile('attach'), '--detach', '--address', server.address], b.io),
      ),
    ]);
    expect(codeA, a.err.join('\n')).to.equal(0);
    expect(codeB, b.err.join('\n')).to.equal(0);
    expect(a.out[0]).to.equal(b.out[0]);
    expect(b.err.join('\n')).to.contain('attached to the running audit');
    workers = await InProcessWorkers.start(server.address, storeRoot, { client, log: (l) => log.push(l) });
    const result = (await client.workflow.getHandle(a.out[0]).result()) as AuditResult;
    expect(result.summary.samples).to.equal(36);
    let runs = 0;
    for await (const _ of client.workflow.list({ query: `WorkflowId = "${a.out[0]}"` })) runs++;
    expect(runs).to.equal(1);
  });

  it('resumes SimCLR from its checkpoint after the worker process is killed', async function () {
    // CPU stages stay in this process; the GPU queue (SimCLR) runs in a child process.
    await workers?.stop();
    workers = await InProcessWorkers.start(server.address, storeRoot, { client, queues: ['cpu'], log: (l) => log.push(l) });
    await writeTinyPipeline(pipelineFile('crash'), {
      datasetRoot,
      datasetName: 'tiny-base',
      output: join(dir, 'out-crash'),
      encoderEpochs: 4,
      seed: 7,
      heartbeatTimeouts: { encoder: '4s' },
    });
    const env = { BACKDOOR_AUDIT_STATE: join(dir, 'state') };
    const args = ['--queue', 'audit-gpu', '--address', server.address, '--store', storeRoot];
    const first = WorkerProcess.spawn(args, env);
    await first.ready();
    const started = await startAudit(client, await loadPipeline(pipelineFile('crash')));
    const checkpoints = join(storeRoot, '.work');
    await waitFor(
      async () => (await checkpointFiles(checkpoints)).length > 0,
      240_000,
      () => `no checkpoint written:\n${first.output.join('\n')}`,
      50,
    );
    const killedAt = performance.now();
    await first.kill('SIGKILL');
    const second = WorkerProcess.spawn(args, env);
    try {
      await second.ready();
      const finished = followAudit(started.handle as AuditHandle, () => undefined, 200);
      finished.catch(() => undefined);
      await waitFor(
        () => second.output.some((l) => l.includes('attempt 2')),
        120_000,
        () => second.output.join('\n'),
        50,
      );
      timings.killToRetry = (performance.now() - killedAt) / 1000;
      await finished;
      timings.crashRecovery = (performance.now() - killedAt) / 1000;
      const encoder = (await queryProgress(started.handle))?.stages.find((s) => s.id === 'encoder');
      expect(encoder?.state).to.equal('done');
      expect(encoder?.resumedFromEpoch, second.output.join('\n')).to.be.at.least(1);
      expect(encoder?.attempt).to.be.at.least(2);
      expect(second.output.join('\n')).to.match(/resumed from epoch [1-9]/);
      expect(second.output.join('\n')).to.match(/attempt 2; last heartbeat at epoch/);
    } finally {
      await second.kill('SIGTERM');
    }
    await workers.stop();
    workers = await InProcessWorkers.start(server.address, storeRoot, { client, log: (l) => log.push(l) });
  });

  it('finishes a run across a restart of the dev server (same SQLite file)', async function () {
    await writeTinyPipeline(pipelineFile('restart'), {
      datasetRoot,
      datasetName: 'tiny-base',
      output: join(dir, 'out-restart'),
      flowEpochs: 6,
    });
    const started = await startAudit(client, await loadPipeline(pipelineFile('restart')));
    await waitFor(
      async () => {
        const p = await queryProgress(started.handle);
        return p !== undefined && p.stages.some((s) => s.stage === 'flow' && s.state === 'running');
      },
      60_000,
      () => 'flows never started',
    );
    await server.restart();
    await started.handle.result();
    const progress = await queryProgress(started.handle);
    expect(progress?.done).to.equal(true);
    expect(stageStates(progress as AuditProgress).density).to.equal('done');
    expect(existsSync(join(dir, 'out-restart', 'report.json'))).to.equal(true);
  });

  it('starts a run from a schedule created through the CLI and skips an overlapping trigger', async function () {
    await writeTinyPipeline(pipelineFile('sched'), { datasetRoot, datasetName: 'tiny-base', output: join(dir, 'out-sched') });
    const c = cliIo();
    expect(
      await main(
        ['schedule', 'create', pipelineFile('sched'), '--cron', '0 3 * * *', '--id', 'nightly-test', '--address', server.address],
        c.io,
      ),
      c.err.join('\n'),
    ).to.equal(0);
    expect(c.out).to.deep.equal(['nightly-test']);
    // Without workers the first run stays live, so the second trigger overlaps it.
    await workers?.stop();
    workers = undefined;
    expect(await main(['schedule', 'trigger', 'nightly-test', '--address', server.address], cliIo().io)).to.equal(0);
    await waitFor(
      async () => (await scheduleRuns(client, 'nightly-test')).running.length === 1,
      30_000,
      () => 'scheduled run did not start',
    );
    expect(await main(['schedule', 'trigger', 'nightly-test', '--address', server.address], cliIo().io)).to.equal(0);
    await new Promise((r) => setTimeout(r, 2000));
    const runs = await scheduleRuns(client, 'nightly-test');
    expect(runs.workflowIds).to.have.length(1);
    const d = await client.schedule.getHandle('nightly-test').describe();
    expect(d.info.numActionsSkippedOverlap).to.be.at.least(1);
    workers = await InProcessWorkers.start(server.address, storeRoot, { client, log: (l) => log.push(l) });
    const result = (await client.workflow.getHandle(runs.workflowIds[0]).result()) as AuditResult;
    expect(result.summary.samples).to.equal(36);
    expect(existsSync(join(dir, 'out-sched', 'report.json'))).to.equal(true);
    const list = cliIo();
    expect(await main(['schedule', 'list', '--address', server.address], list.io)).to.equal(0);
    expect(list.out.join('\n')).to.contain('nightly-test').and.contain('0 3 * * *');
    expect(await main(['schedule', 'delete', 'nightly-test', '--address', server.address], cliIo().io)).to.equal(0);
  });

  it('stops SimCLR at the next batch when the audit is cancelled, keeping its checkpoint', async function () {
    await writeTinyPipeline(pipelineFile('cancel'), {
      datasetRoot,
      datasetName: 'tiny-base',
      output: join(dir, 'out-cancel'),
      encoderEpochs: 200,
      seed: 11,
    });
    const started = await startAudit(client, await loadPipeline(pipelineFile('cancel')));
    await waitFor(
      async () => ((await queryProgress(started.handle))?.stages.find((r) => r.id === 'encoder')?.epoch ?? 0) >= 1,
      240_000,
      () => 'SimCLR made no progress',
    );
    await started.handle.cancel();
    let failure: unknown;
    await started.handle.result().catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(WorkflowFailedError);
    expect((failure as WorkflowFailedError).cause).to.be.instanceOf(CancelledFailure);
    const d = await started.handle.describe();
    expect(d.status.name).to.equal('CANCELLED');
    expect(d.raw.pendingActivities ?? []).to.have.length(0);
    // The activity ended well before its 200 epochs; its checkpoint stays for a later run to resume.
    const epochsLogged = log.filter((l) => /^simclr: epoch \d+\/200/.test(l)).length;
    expect(epochsLogged).to.be.below(200);
    expect(await checkpointFiles(join(storeRoot, '.work'))).to.have.length.at.least(1);
  });

  it('fails an audit of a one-class dataset at once, with the reason, instead of retrying it forever', async function () {
    const oneClass = await tinyImageFolder(join(dir, 'one-class'), 1, 6);
    await writeTinyPipeline(pipelineFile('one-class'), { datasetRoot: oneClass, datasetName: 'one-class', output: join(dir, 'out-one') });
    const started = await startAudit(client, await loadPipeline(pipelineFile('one-class')));
    let failure: unknown;
    await started.handle.result().catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(WorkflowFailedError);
    expect(String((failure as WorkflowFailedError).cause?.message)).to.match(/1 class\(es\); an audit needs at least 2/);
    expect((await started.handle.describe()).status.name).to.equal('FAILED');
    expect((await queryProgress(started.handle))?.verdict).to.equal('failed');
  });

  it('rejects bad YAML and schema violations with file and line, starting nothing', async function () {
    const count = async () => {
      let n = 0;
      for await (const _ of client.workflow.list({ query: 'WorkflowType = "auditWorkflow"' })) n++;
      return n;
    };
    const before = await count();
    const badYaml = join(dir, 'bad-yaml.yaml');
    await writeFile(badYaml, 'name: x\ndataset: [unclosed\n');
    const schema = join(dir, 'bad-schema.yaml');
    await writeFile(
      schema,
      `name: x\ndataset:\n  format: imagefolder\n  root: ${datasetRoot}\n  imageSize: big\noutput: o\naudit:\n  flow: {epochs: 0}\n`,
    );
    for (const [file, pattern] of [
      [badYaml, /bad-yaml\.yaml:\d+:\d+: .*YAML/],
      [schema, /bad-schema\.yaml:5:\d+: dataset\.imageSize: expected integer, got string "big"/],
    ] as const) {
      const c = cliIo();
      expect(await main(['run', file, '--address', server.address], c.io)).to.equal(2);
      expect(c.err.join('\n')).to.match(pattern);
    }
    expect(await count()).to.equal(before);
  });

  it('registers missing search attributes idempotently', async function () {
    // start-dev registered them; a second call finds nothing to add.
    expect(await ensureSearchAttributes(connection, 'default')).to.deep.equal([]);
  });
});

/** Keys of the published artifacts of one stage. */
async function artifactsOf(root: string, stage: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(root)) {
    if (name.startsWith('.')) continue;
    const manifest = await readFile(join(root, name, '.artifact.json'), 'utf8').catch(() => undefined);
    if (manifest && (JSON.parse(manifest) as { stage: string }).stage === stage) out.push(name);
  }
  return out.sort();
}

async function checkpointFiles(workRoot: string): Promise<string[]> {
  const out: string[] = [];
  for (const key of await readdir(workRoot).catch(() => [] as string[])) {
    for (const f of await readdir(join(workRoot, key, 'checkpoint')).catch(() => [] as string[])) {
      if (f === 'checkpoint.bin') out.push(join(workRoot, key, 'checkpoint', f)); // written atomically
    }
  }
  return out;
}

describe('embedded dev server (no address configured)', function () {
  this.timeout(120_000);
  const savedEnv = saveServerEnv();
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-embedded-'));
    process.env.BACKDOOR_AUDIT_STATE = dir;
    process.env.BACKDOOR_AUDIT_TEMPORAL_PORT = String(await freePort());
    delete process.env.TEMPORAL_ADDRESS;
  });

  after(async () => {
    await stopEmbeddedServer(dir);
    savedEnv.restore();
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a loopback dev server with a SQLite file and the search attributes, then reuses it', async function () {
    const first = await openTemporal({ ui: false });
    try {
      expect(first.server?.started).to.equal(true);
      expect(first.address).to.equal(`127.0.0.1:${process.env.BACKDOOR_AUDIT_TEMPORAL_PORT}`);
      expect(existsSync(join(dir, 'temporal.db'))).to.equal(true);
      const { customAttributes } = await first.connection.operatorService.listSearchAttributes({ namespace: 'default' });
      expect(Object.keys(customAttributes ?? {})).to.include.members([
        'BackdoorDataset',
        'BackdoorStage',
        'BackdoorTargetClasses',
        'BackdoorVerdict',
      ]);
    } finally {
      await first.close();
    }
    const second = await openTemporal({ ui: false });
    try {
      expect(second.server?.started).to.equal(false);
      expect(second.server?.pid).to.equal(first.server?.pid);
    } finally {
      await second.close();
    }
  });

  it('binds the server and its UI to loopback', function () {
    const args = devServerArgs({ dbFile: '/s/temporal.db', port: 7233 }).join(' ');
    expect(args).to.contain('server start-dev --ip 127.0.0.1 --port 7233 --db-filename /s/temporal.db');
    expect(args).to.contain('--ui-port 8233 --ui-ip 127.0.0.1');
    expect(args).to.contain('--search-attribute BackdoorTargetClasses=KeywordList');
    expect(devServerArgs({ dbFile: '/s/t.db', port: 7300, ui: false }))
      .to.include('--headless')
      .and.not.include('--ui-port');
  });
});
