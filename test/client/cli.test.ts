// The CLI when things go wrong, on a real dev server (SQLite, loopback, a free port): a failed
// audit names its stage, its root cause and its failure type and exits 2 for bad input; SIGINT
// and SIGTERM end a `backdoor-audit run` child process within seconds (Ctrl-C cancels the audit,
// SIGTERM detaches from it); a stage waiting for a retry says so in `status` and `watch`; and a
// pipeline file too large to be one is refused before it is parsed.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, Connection } from '@temporalio/client';
import { main, type CliIo } from '../../client/cli.js';
import { MAX_PIPELINE_BYTES, parsePipeline, PipelineError } from '../../client/pipeline.js';
import { repoRoot } from '../../data/paths.js';
import { connectClient, InProcessWorkers, TestServer, tinyImageFolder, waitFor, writeTinyPipeline } from '../temporal-helpers.js';

/** A CliIo that keeps what the CLI prints (progress lines included: a non-TTY progress stream). */
function captureIo(signal?: AbortSignal): { io: CliIo; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const progressStream = { isTTY: false, write: (s: string) => (err.push(s.trimEnd()), true) } as unknown as NodeJS.WriteStream;
  return { io: { out: (t) => void out.push(t), err: (t) => void err.push(t), progressStream, ...(signal ? { signal } : {}) }, out, err };
}

/** `backdoor-audit run` in a child process, as a person (or a service manager) runs it. */
class RunProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  private readonly child;

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [join(repoRoot, 'bin', 'backdoor-audit.js'), 'run', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const collect = (b: Buffer) => this.lines.push(...b.toString().split('\n').filter(Boolean));
    this.child.stdout.on('data', collect);
    this.child.stderr.on('data', collect);
    this.exited = new Promise((r) => this.child.once('exit', (code, signal) => r({ code, signal, at: performance.now() })));
  }

  get workflowId(): string | undefined {
    return this.lines.map((l) => /^started audit (\S+)/.exec(l)?.[1]).find(Boolean);
  }

  /** Sends `signal` and resolves with the exit code and the seconds it took to exit (SIGKILL after `limitMs`). */
  async interrupt(signal: NodeJS.Signals, limitMs: number): Promise<{ code: number | null; seconds: number }> {
    const sent = performance.now();
    this.child.kill(signal);
    const killer = setTimeout(() => this.child.kill('SIGKILL'), limitMs);
    const { code, at } = await this.exited;
    clearTimeout(killer);
    return { code, seconds: (at - sent) / 1000 };
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

async function checkpointFiles(workRoot: string): Promise<string[]> {
  const out: string[] = [];
  for (const key of await readdir(workRoot).catch(() => [] as string[])) {
    for (const f of await readdir(join(workRoot, key, 'checkpoint')).catch(() => [] as string[])) {
      if (f === 'checkpoint.bin') out.push(join(workRoot, key, 'checkpoint', f));
    }
  }
  return out;
}

describe('backdoor-audit CLI: failures, signals, retries (real dev server)', function () {
  this.timeout(180_000);

  let dir: string;
  let server: TestServer;
  let client: Client;
  let connection: Connection;
  let datasetRoot: string;
  let stateDir: string;
  const savedState = process.env.BACKDOOR_AUDIT_STATE;
  const timings: Record<string, number> = {};
  /** The audit the SIGTERM test leaves running (its encoder waiting for a retry). */
  let detached: string | undefined;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-cli-'));
    stateDir = join(dir, 'state');
    process.env.BACKDOOR_AUDIT_STATE = stateDir;
    datasetRoot = await tinyImageFolder(join(dir, 'data'), 3, 12);
    server = await TestServer.start(dir);
    ({ client, connection } = await connectClient(server.address));
  });

  after(async function () {
    if (detached)
      await client.workflow
        .getHandle(detached)
        .terminate('test over')
        .catch(() => undefined);
    await connection?.close();
    await server?.stop();
    if (savedState === undefined) delete process.env.BACKDOOR_AUDIT_STATE;
    else process.env.BACKDOOR_AUDIT_STATE = savedState;
    if (Object.keys(timings).length) console.log(`      timings (s): ${JSON.stringify(timings)}`);
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a 200k-key pipeline file at once, naming the file and the size limit', async function () {
    this.timeout(60_000);
    const keys = (n: number) => ['name: big', 'extra:', ...Array.from({ length: n }, (_, i) => `  key${i}: ${i}`)].join('\n') + '\n';
    const big = join(dir, 'big.yaml');
    await writeFile(big, keys(200_000));
    const c = captureIo();
    let t0 = performance.now();
    expect(await main(['run', big, '--address', server.address], c.io)).to.equal(2);
    timings.bigYamlRejected = (performance.now() - t0) / 1000;
    expect(c.err.join('\n'))
      .to.contain(big)
      .and.match(/over the 1048576-byte \(1 MiB\) limit/);
    expect(timings.bigYamlRejected, 'sanity bound only').to.be.below(10);

    // Under the limit, duplicate keys are found in linear time (the yaml package's own check is quadratic).
    const dupes = `${keys(50_000)}  key7: again\n`;
    expect(Buffer.byteLength(dupes)).to.be.below(MAX_PIPELINE_BYTES);
    t0 = performance.now();
    const err = await parsePipeline(dupes, '/p/dupes.yaml').catch((e: unknown) => e);
    timings.dupes50kKeys = (performance.now() - t0) / 1000;
    expect(err).to.be.instanceOf(PipelineError);
    expect((err as PipelineError).message).to.contain('/p/dupes.yaml:50003:3: extra.key7: YAML: map keys must be unique');
    expect(timings.dupes50kKeys, 'sanity bound only').to.be.below(60);
  });

  it('explains a corrupt JPEG: the stage, the file and DatasetError, exit code 2; status and watch say the same', async function () {
    const bad = await tinyImageFolder(join(dir, 'bad'), 3, 12);
    const file = join(bad, 'bird', (await readdir(join(bad, 'bird'))).sort()[3] as string);
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    const pipeline = await writeTinyPipeline(join(dir, 'bad.yaml'), { datasetRoot: bad, datasetName: 'bad', output: join(dir, 'out-bad') });

    let t = performance.now();
    const lap = (name: string) => {
      timings[name] = (performance.now() - t) / 1000;
      t = performance.now();
    };
    const workers = await InProcessWorkers.start(server.address, join(stateDir, 'artifacts'), { client });
    lap('workersStarted');
    let id: string;
    try {
      const run = captureIo();
      const t0 = performance.now();
      expect(await main(['run', pipeline, '--address', server.address], run.io), run.err.join('\n')).to.equal(2);
      timings.corruptJpegFailed = (performance.now() - t0) / 1000;
      const error = run.err.join('\n');
      expect(error).to.contain(`error: ingest: ${file}: cannot decode image`);
      expect(error).to.match(/failure type DatasetError \(bad input/);
      expect(error).not.to.contain('Workflow execution failed');
      id = run.err.map((l) => /^started audit (\S+)/.exec(l)?.[1]).find(Boolean) as string;
      expect(id).to.be.a('string');

      // A worker answers: the table's failed row and the cause.
      const status = captureIo();
      expect(await main(['status', id, '--address', server.address], status.io), status.err.join('\n')).to.equal(0);
      expect(status.out.join('\n'))
        .to.match(/verdict failed/)
        .and.match(new RegExp(`ingest\\s+failed\\s+.*${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`))
        .and.contain(`failed: ingest: ${file}: cannot decode image`);
      lap('statusWithWorker');
    } finally {
      await workers.stop();
      lap('workersStopped');
    }
    // No worker: the server still has the failure.
    const status = captureIo();
    expect(await main(['status', id, '--address', server.address], status.io)).to.equal(0);
    expect(status.out.join('\n'))
      .to.contain(`${id}: FAILED (no worker answered`)
      .and.contain(`failed: ingest: ${file}: cannot decode image`);
    lap('statusNoWorker');
    const watch = captureIo();
    expect(await main(['watch', id, '--address', server.address], watch.io)).to.equal(2);
    expect(watch.err.join('\n')).to.contain(`error: ingest: ${file}`).and.contain('DatasetError');
    lap('watchFailed');
  });

  /** A `run` child process of a 200-epoch audit (its own workers: --worker), once SimCLR trains. */
  async function runUntilSimclrTrains(name: string, seed: number): Promise<RunProcess> {
    const pipeline = await writeTinyPipeline(join(dir, `${name}.yaml`), {
      datasetRoot,
      datasetName: 'tiny',
      output: join(dir, `out-${name}`),
      encoderEpochs: 200,
      seed,
    });
    const run = new RunProcess([pipeline, '--address', server.address, '--worker'], { BACKDOOR_AUDIT_STATE: stateDir });
    try {
      await waitFor(
        () => run.lines.some((l) => /^encoder: running \d+\/200/.test(l)),
        120_000,
        () => `SimCLR did not start:\n${run.lines.join('\n')}`,
      );
    } catch (err) {
      run.kill();
      throw err;
    }
    return run;
  }

  it('Ctrl-C on `run` cancels the audit it started within seconds, keeping the checkpoint (exit code 130)', async function () {
    const run = await runUntilSimclrTrains('sigint', 21);
    try {
      const { code, seconds } = await run.interrupt('SIGINT', 30_000);
      timings.sigintToExit = seconds;
      const output = run.lines.join('\n');
      expect(code, output).to.equal(130);
      expect(seconds, output).to.be.below(10);
      expect(output).to.match(/interrupted: cancelling audit \S+; a running stage stops at its next batch/);
      expect(output).to.match(/audit \S+ cancelled/);
      const d = await client.workflow.getHandle(run.workflowId as string).describe();
      expect(d.status.name).to.equal('CANCELLED');
      expect(d.raw.pendingActivities ?? []).to.have.length(0);
      expect(await checkpointFiles(join(stateDir, 'artifacts', '.work'))).to.have.length.at.least(1);
    } finally {
      run.kill();
    }
  });

  it('SIGTERM on `run` detaches within seconds: its worker stops, the audit stays for the next worker (exit code 143)', async function () {
    const run = await runUntilSimclrTrains('sigterm', 22);
    try {
      const { code, seconds } = await run.interrupt('SIGTERM', 30_000);
      timings.sigtermToExit = seconds;
      const output = run.lines.join('\n');
      expect(code, output).to.equal(143);
      expect(seconds, output).to.be.below(10);
      expect(output).to.match(/interrupted \(SIGTERM\): detaching; audit \S+ keeps running/);
      detached = run.workflowId as string;
      const d = await client.workflow.getHandle(detached).describe();
      expect(d.status.name).to.equal('RUNNING');
      // The encoder's attempt ended with the worker; its retry waits for the next worker.
      const encoder = (d.raw.pendingActivities ?? []).find((a) => a.activityType?.name === 'encoder');
      expect(encoder?.attempt, JSON.stringify(d.raw.pendingActivities)).to.equal(2);
    } finally {
      run.kill();
    }
  });

  it('shows a stage waiting for a retry in `status` and `watch`; Ctrl-C stops watching only', async function () {
    if (!detached) this.skip(); // made by the SIGTERM test
    const id = detached;
    // A workflow worker answers the query; no GPU worker, so the encoder keeps waiting.
    const workers = await InProcessWorkers.start(server.address, join(stateDir, 'artifacts'), { client, queues: ['cpu'] });
    try {
      const status = captureIo();
      let text = '';
      await waitFor(
        async () => {
          status.out.length = 0;
          expect(await main(['status', id, '--address', server.address], status.io)).to.equal(0);
          text = status.out.join('\n');
          return /encoder\s+retrying \(attempt 2 of 3\)\s+.*last failure: /.test(text);
        },
        60_000,
        () => text,
        1000,
      );
      const stop = new AbortController();
      const watch = captureIo(stop.signal);
      const watching = main(['watch', id, '--address', server.address], watch.io);
      await waitFor(
        () => watch.err.some((l) => /^encoder: retrying \(attempt 2 of 3, last failure: .+\)$/.test(l)),
        60_000,
        () => watch.err.join('\n'),
      );
      stop.abort('SIGINT');
      expect(await watching).to.equal(130);
      expect(watch.err.join('\n')).to.contain(`stopped watching; audit ${id} keeps running`);
      expect((await client.workflow.getHandle(id).describe()).status.name).to.equal('RUNNING');
    } finally {
      await workers.stop();
    }
  });

  it('Ctrl-C with --on-interrupt detach leaves the audit running', async function () {
    const pipeline = await writeTinyPipeline(join(dir, 'detach.yaml'), {
      datasetRoot,
      datasetName: 'tiny',
      output: join(dir, 'out-detach'),
      encoderEpochs: 200,
      seed: 23,
    });
    const workers = await InProcessWorkers.start(server.address, join(stateDir, 'artifacts'), { client });
    let id: string | undefined;
    try {
      const stop = new AbortController();
      const run = captureIo(stop.signal);
      const running = main(['run', pipeline, '--address', server.address, '--on-interrupt', 'detach'], run.io);
      await waitFor(
        () => run.err.some((l) => /^encoder: running \d+\/200/.test(l)),
        120_000,
        () => run.err.join('\n'),
      );
      stop.abort('SIGINT');
      expect(await running).to.equal(130);
      id = run.err.map((l) => /^started audit (\S+)/.exec(l)?.[1]).find(Boolean);
      expect(run.err.join('\n')).to.contain(`interrupted (SIGINT): detaching; audit ${id} keeps running`);
      expect((await client.workflow.getHandle(id as string).describe()).status.name).to.equal('RUNNING');
    } finally {
      if (id)
        await client.workflow
          .getHandle(id)
          .terminate('test over')
          .catch(() => undefined);
      await workers.stop();
    }
  });
});
