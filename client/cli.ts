// The `backdoor-audit` command line: run / worker / status / watch / report / schedule / server.
// Without an address (flag or TEMPORAL_ADDRESS) it uses the embedded dev server and, for
// `run`, an in-process worker.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import type { WorkflowHandle } from '@temporalio/client';
import { ArtifactStore } from '../data/artifacts.js';
import { stateDir, storeRoot } from '../data/paths.js';
import { createWorkers, installRuntime, runWorkers } from '../worker/index.js';
import { embeddedPort, ensureSearchAttributes, openTemporal, type ConnectionFlags, type TemporalSession } from './connection.js';
import { followAudit, queryProgress, startAudit, type AuditHandle } from './audit.js';
import { loadPipeline, PipelineError } from './pipeline.js';
import { formatProgress, progressView } from './progress-view.js';
import { createSchedule, deleteSchedule, listSchedules, triggerSchedule } from './schedule.js';
import { startDevServer } from './server.js';
import type { AuditResult, Pipeline, QueueKind } from '../workflows/types.js';
import { writeFileAtomic } from '../data/files.js';

/** Worker log lines that repeat what the progress display shows: a stage computed, its outputs written, a training epoch. */
const WORKER_PROGRESS_LINE = /^\S+: (computed in |wrote |epoch \d+\/\d+ )/;

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Progress display stream (bars on a TTY, lines otherwise). */
  progressStream?: NodeJS.WriteStream;
  /** Aborted on SIGINT / SIGTERM by bin/; tests abort it themselves. */
  signal?: AbortSignal;
}

const defaultIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--address <host:port>', 'Temporal frontend (default: TEMPORAL_ADDRESS, else the embedded dev server)')
    .option('--namespace <name>', 'namespace (default: TEMPORAL_NAMESPACE or "default")')
    .option('--tls-cert <file>', 'client certificate for mTLS (or TEMPORAL_TLS_CERT)')
    .option('--tls-key <file>', 'client key for mTLS (or TEMPORAL_TLS_KEY)')
    .option('--tls-ca <file>', 'server CA certificate (or TEMPORAL_TLS_CA)')
    .option('--no-ui', 'start the embedded server without its web UI');
}

function flagsOf(o: Record<string, unknown>): ConnectionFlags {
  const s = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const flags: ConnectionFlags = {};
  if (s('address')) flags.address = s('address');
  if (s('namespace')) flags.namespace = s('namespace');
  if (s('tlsCert')) flags.tlsCert = s('tlsCert');
  if (s('tlsKey')) flags.tlsKey = s('tlsKey');
  if (s('tlsCa')) flags.tlsCa = s('tlsCa');
  if (o.ui === false) flags.ui = false;
  return flags;
}

async function withTemporal<T>(opts: Record<string, unknown>, io: CliIo, fn: (t: TemporalSession) => Promise<T>): Promise<T> {
  const session = await openTemporal(flagsOf(opts));
  if (session.server?.started) {
    const ui = opts.ui === false ? '' : `, UI http://127.0.0.1:${embeddedPort() + 1000}`;
    io.err(`started the embedded Temporal dev server on ${session.address}${ui} (state in ${stateDir()})`);
  }
  try {
    return await fn(session);
  } finally {
    await session.close();
  }
}

function parseQueues(value: string): QueueKind[] {
  if (value === 'all') return ['cpu', 'gpu'];
  const queues = value.split(',').map((q) => q.trim().replace(/^audit-/, ''));
  for (const q of queues) if (q !== 'cpu' && q !== 'gpu') throw new Error(`unknown queue "${q}": use audit-cpu, audit-gpu or all`);
  return queues as QueueKind[];
}

/** Writes report.json / cleansed.jsonl here when the worker that wrote them runs on another machine. */
async function ensureLocalOutputs(result: AuditResult, pipeline: Pipeline, io: CliIo): Promise<string[]> {
  const files = [join(pipeline.output, 'report.json'), join(pipeline.output, 'cleansed.jsonl')];
  if (files.every((f) => existsSync(f))) return files;
  const storeDir = new ArtifactStore(storeRoot()).dir(result.reportRef);
  if (!existsSync(join(storeDir, 'cleansed.jsonl'))) {
    io.err(`the outputs were written by a remote worker (${result.outputs.join(', ')}); this machine cannot see its artifact store`);
    return [];
  }
  await copyOutputs(storeDir, pipeline.output);
  return files;
}

/** Copies the report artifact's cleansed.jsonl and report.json (last) into `dir`, atomically. */
async function copyOutputs(storeDir: string, dir: string): Promise<void> {
  for (const name of ['cleansed.jsonl', 'report.json']) await writeFileAtomic(join(dir, name), await readFile(join(storeDir, name)));
}

function summary(result: AuditResult): string {
  const r = result.summary;
  const targets = r.targetClasses;
  const lines = [
    `verdict: ${targets.length ? `poisoned (target class${targets.length > 1 ? 'es' : ''}: ${targets.join(', ')})` : 'no target class found'}`,
    `samples: ${r.samples}; kept ${r.counts.kept}, relabelled ${r.counts.relabelled}, dropped ${r.counts.dropped}`,
  ];
  if (r.evaluation)
    lines.push(
      `evaluation: ${Object.entries(r.evaluation)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(3) : String(v)}`)
        .join(', ')}`,
    );
  return lines.join('\n');
}

async function follow(handle: AuditHandle, io: CliIo, view = progressView(io.progressStream ?? process.stderr)): Promise<AuditResult> {
  try {
    return await followAudit(handle, (p) => view.update(p));
  } finally {
    view.stop();
  }
}

export function buildProgram(io: CliIo = defaultIo): Command {
  const program = new Command('backdoor-audit')
    .description('Durable dataset audit for backdoor poisoning (Temporal pipeline)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  addConnectionOptions(
    program
      .command('run <pipeline>')
      .description('run (or attach to) the audit a pipeline file describes, show progress, write report.json + cleansed.jsonl')
      .option('--detach', 'start and return without waiting')
      .option('--no-worker', 'do not start an in-process worker (workers run elsewhere)')
      .option('--worker', 'start an in-process worker even when an address is configured')
      .option('--verbose', "print every line of the in-process worker's log"),
  ).action(async (file: string, opts: Record<string, unknown>) => {
    const pipeline = await loadPipeline(file);
    await withTemporal(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch((err: unknown) =>
        io.err(`warning: could not check the custom search attributes: ${(err as Error).message}`),
      );
      const embedded = t.config.address === undefined;
      const inProcess = opts.worker !== false && (embedded || opts.worker === true) && !opts.detach;
      const stopWorkers = new AbortController();
      let workersDone: Promise<void> | undefined;
      // Worker log lines go through the progress display so they do not break its bars.
      const view = progressView(io.progressStream ?? process.stderr);
      if (inProcess) {
        installRuntime('ERROR'); // stage progress is shown by the display; SDK warnings would only clutter it
        const workers = await createWorkers({
          connection: await t.nativeConnection(),
          namespace: t.config.namespace,
          taskQueues: pipeline.temporal.taskQueues,
          client: t.client,
          // The display already shows each stage's completion and epochs; the in-process worker adds
          // only what it cannot show (backend choice, retries, resumption) unless --verbose.
          log: (line) => {
            if (opts.verbose === true || !WORKER_PROGRESS_LINE.test(line)) view.log(line);
          },
        });
        workersDone = runWorkers(workers, stopWorkers.signal);
      }
      try {
        const started = await startAudit(t.client, pipeline);
        io.err(`${started.attached ? 'attached to the running audit' : 'started audit'} ${started.workflowId}`);
        if (opts.detach) {
          view.stop();
          io.out(started.workflowId);
          return;
        }
        const abort = () => stopWorkers.abort();
        io.signal?.addEventListener('abort', abort, { once: true });
        const result = await follow(started.handle, io, view);
        const files = await ensureLocalOutputs(result, pipeline, io);
        io.out(summary(result));
        for (const f of files) io.out(`wrote ${f}`);
      } finally {
        stopWorkers.abort();
        await workersDone?.catch((err: unknown) => io.err(`worker stopped with an error: ${(err as Error).message}`));
      }
    });
  });

  addConnectionOptions(
    program
      .command('worker')
      .description('run a worker for one or both task queues until interrupted')
      .option('--queue <queue>', 'audit-cpu, audit-gpu or all', 'all')
      .option('--store <dir>', 'artifact store root (default BACKDOOR_AUDIT_STORE or .state/artifacts)')
      .option('--concurrency <n>', 'concurrent activities on the CPU queue', '2')
      .option('--cpu-queue <name>', 'name of the CPU task queue', 'audit-cpu')
      .option('--gpu-queue <name>', 'name of the GPU task queue', 'audit-gpu'),
  ).action(async (opts: Record<string, unknown>) => {
    const queues = parseQueues(String(opts.queue));
    installRuntime('WARN');
    await withTemporal(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch(() => undefined);
      const workers = await createWorkers({
        connection: await t.nativeConnection(),
        namespace: t.config.namespace,
        queues,
        taskQueues: { cpu: String(opts.cpuQueue), gpu: String(opts.gpuQueue) },
        ...(typeof opts.store === 'string' ? { storeRoot: resolve(opts.store) } : {}),
        cpuConcurrency: Number(opts.concurrency),
        client: t.client,
        log: (line) => io.err(line),
      });
      io.err(
        `worker on ${queues.map((q) => (q === 'cpu' ? opts.cpuQueue : opts.gpuQueue)).join(', ')} connected to ${t.address} (pid ${process.pid})`,
      );
      await runWorkers(workers, io.signal);
    });
  });

  const handleFor = (t: TemporalSession, id: string): WorkflowHandle => t.client.workflow.getHandle(id);

  addConnectionOptions(program.command('status <workflowId>').description('print the progress table of an audit once')).action(
    async (id: string, opts: Record<string, unknown>) => {
      await withTemporal(opts, io, async (t) => {
        const p = await queryProgress(handleFor(t, id));
        if (!p) {
          const d = await handleFor(t, id).describe();
          io.out(`${id}: ${d.status.name} (no worker answered the progress query)`);
          return;
        }
        io.out(formatProgress(p));
      });
    },
  );

  addConnectionOptions(program.command('watch <workflowId>').description('follow an audit until it finishes')).action(
    async (id: string, opts: Record<string, unknown>) => {
      await withTemporal(opts, io, async (t) => {
        const result = await follow(t.client.workflow.getHandle(id) as AuditHandle, io);
        io.out(summary(result));
      });
    },
  );

  addConnectionOptions(
    program
      .command('report <workflowId>')
      .description('print the report of a finished audit, or write report.json + cleansed.jsonl with --out')
      .option('--out <dir>', 'folder to write report.json and cleansed.jsonl into'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      const result = (await t.client.workflow.getHandle(id).result()) as AuditResult;
      if (typeof opts.out === 'string') {
        const dir = resolve(opts.out);
        const storeDir = new ArtifactStore(storeRoot()).dir(result.reportRef);
        await copyOutputs(storeDir, dir);
        io.out(`wrote ${join(dir, 'report.json')} and ${join(dir, 'cleansed.jsonl')}`);
      } else {
        // The workflow returns a reference; the report itself is in the artifact store.
        const storeDir = new ArtifactStore(storeRoot()).dir(result.reportRef);
        io.out((await readFile(join(storeDir, 'report.json'), 'utf8')).trimEnd());
      }
    });
  });

  const schedule = program.command('schedule').description('audits on a cron schedule (Temporal Schedules, overlap policy SKIP)');
  addConnectionOptions(
    schedule
      .command('create <pipeline>')
      .requiredOption('--cron <expr>', 'cron expression, e.g. "0 2 * * *" (02:00 UTC daily)')
      .option('--id <scheduleId>', 'schedule id (default audit-schedule-<pipeline name>)')
      .option('--paused', 'create it paused'),
  ).action(async (file: string, opts: Record<string, unknown>) => {
    const pipeline = await loadPipeline(file);
    await withTemporal(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch(() => undefined);
      const id = await createSchedule(t.client, pipeline, {
        cron: String(opts.cron),
        ...(typeof opts.id === 'string' ? { scheduleId: opts.id } : {}),
        paused: opts.paused === true,
      });
      io.out(id);
    });
  });
  addConnectionOptions(schedule.command('list')).action(async (opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      for (const s of await listSchedules(t.client)) {
        io.out(
          `${s.scheduleId}  cron ${s.cron.join(' | ') || '?'}${s.paused ? '  (paused)' : ''}  next ${s.nextRuns[0] ?? '-'}  recent runs ${s.recentRuns.length}`,
        );
      }
    });
  });
  addConnectionOptions(schedule.command('delete <scheduleId>')).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      await deleteSchedule(t.client, id);
      io.out(`deleted ${id}`);
    });
  });
  addConnectionOptions(
    schedule.command('trigger <scheduleId>').description('start the scheduled audit now (skipped while one runs)'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      await triggerSchedule(t.client, id);
      io.out(`triggered ${id}`);
    });
  });

  program
    .command('server')
    .description('run the embedded Temporal dev server in the foreground (loopback, SQLite under the state folder)')
    .addOption(new Option('--port <port>', 'frontend port').default(String(embeddedPort())))
    .option('--no-ui', 'no web UI')
    .action(async (opts: Record<string, unknown>) => {
      const port = Number(opts.port);
      const dbFile = join(stateDir(), 'temporal.db');
      const server = await startDevServer({ dbFile, port, ui: opts.ui !== false, detached: false });
      if (!server.started) {
        io.err(`a Temporal server already answers on ${server.address}`);
        return;
      }
      io.err(
        `Temporal dev server on ${server.address}${opts.ui === false ? '' : `, UI http://127.0.0.1:${port + 1000}`}; state ${dbFile}; log ${server.logFile}`,
      );
      await new Promise<void>((resolveStop) => {
        if (!io.signal) return; // runs until the process is killed
        io.signal.addEventListener('abort', () => resolveStop(), { once: true });
      });
      await server.stop();
    });

  return program;
}

/** Runs the CLI; returns the exit code (2 for a bad pipeline file or usage). */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof PipelineError) {
      io.err(err.message);
      return 2;
    }
    io.err(`error: ${(err as Error).message}`);
    return 1;
  }
}
