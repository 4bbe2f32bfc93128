// The `backdoor-audit` command line: run / status / watch / report / diff / attack, schedule
// (client/schedule-commands.ts), and worker / server / codec-server (client/service-commands.ts).
// Without an address (flag or TEMPORAL_ADDRESS) it uses the embedded dev server and, for
// `run`, an in-process worker.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ArtifactStore } from '../data/artifacts.js';
import { storeRoot } from '../data/paths.js';
import { createWorkers, installRuntime, runWorkers } from '../worker/index.js';
import { ensureSearchAttributes, type TemporalSession } from './connection.js';
import {
  AuditFailedError,
  explainFailure,
  followAudit,
  pendingRetries,
  queryProgress,
  QUERY_WAIT_MS,
  startAudit,
  withRetries,
  type AuditFailure,
  type AuditHandle,
  type StartedAudit,
} from './audit.js';
import { InterruptedError, interruptOf, interruptRun, onInterrupt, type InterruptAction } from './interrupt.js';
import { loadPipeline, PipelineError } from './pipeline.js';
import { formatProgress, progressView, retryLine, type ProgressView } from './progress-view.js';
import { addConnectionOptions, defaultIo, onStoreQueues, withSession, withTemporal, withUiUrl, type CliIo } from './cli-session.js';
import { addScheduleCommands } from './schedule-commands.js';
import { addServiceCommands } from './service-commands.js';

export type { CliIo } from './cli-session.js';
import { diffAudits, formatDiff, readAuditOutputs } from '../report/diff.js';
import type { AuditProgress, AuditResult, Pipeline } from '../workflows/types.js';
import { writeFileAtomic } from '../data/files.js';

/** Worker log lines that repeat what the progress display shows: a stage computed, its outputs written, a training epoch. */
const WORKER_PROGRESS_LINE = /^\S+: (computed in |wrote |epoch \d+\/\d+ )/;

/** Writes report.json / cleansed.jsonl here when the worker that wrote them runs on another machine. */
async function ensureLocalOutputs(result: AuditResult, pipeline: Pipeline, io: CliIo): Promise<string[]> {
  const files = OUTPUT_FILES.map((f) => join(pipeline.output, f));
  if (files.every((f) => existsSync(f))) return files;
  const storeDir = new ArtifactStore(storeRoot()).dir(result.reportRef);
  if (!existsSync(join(storeDir, 'cleansed.jsonl'))) {
    io.err(`the outputs were written by a remote worker (${result.outputs.join(', ')}); this machine cannot see its artifact store`);
    return [];
  }
  await copyOutputs(storeDir, pipeline.output);
  return files;
}

/** What an audit writes to its output folder; report.json last (its presence means the rest is complete). */
const OUTPUT_FILES = ['cleansed.jsonl', 'report.html', 'report.json'] as const;

/** Copies the report artifact's outputs into `dir`, each atomically, report.json last. */
async function copyOutputs(storeDir: string, dir: string): Promise<void> {
  for (const name of OUTPUT_FILES) await writeFileAtomic(join(dir, name), await readFile(join(storeDir, name)));
}

/**
 * The artifact folder holding a finished audit's report.json + cleansed.jsonl, as `report
 * <workflowId>` finds it: the workflow's result names the report artifact in this machine's store.
 */
async function auditOutputsDir(t: TemporalSession, workflowId: string): Promise<string> {
  const handle = t.client.workflow.getHandle(workflowId);
  const result = (await handle.result().catch(async (err: unknown) => {
    throw err instanceof WorkflowFailedError ? new AuditFailedError(await explainFailure(handle, err)) : err;
  })) as AuditResult;
  const dir = new ArtifactStore(storeRoot()).dir(result.reportRef);
  if (!existsSync(join(dir, 'report.json'))) {
    throw new Error(
      `${workflowId}: its report artifact is not in this machine's store ${storeRoot()} (written by a remote worker?); use \`report ${workflowId} --out <dir>\` where it is, and diff the folder`,
    );
  }
  return dir;
}

function summary(result: AuditResult): string {
  const r = result.summary;
  const targets = r.targetClasses;
  const lines = [
    `verdict: ${targets.length ? `poisoned (target class${targets.length > 1 ? 'es' : ''}: ${targets.join(', ')})` : 'no target class found'}`,
    `samples: ${r.samples}; kept ${r.counts.kept}, relabelled ${r.counts.relabelled}, dropped ${r.counts.dropped}`,
  ];
  if (r.nearMisses?.length) lines.push(`near misses (did not fire): ${r.nearMisses.join(', ')}`);
  if (r.warnings) lines.push(`warnings: ${r.warnings} (listed in report.json)`);
  if (r.evaluation)
    lines.push(
      `evaluation: ${Object.entries(r.evaluation)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(3) : String(v)}`)
        .join(', ')}`,
    );
  return lines.join('\n');
}

/**
 * Shows an audit's progress until it closes. Rejects with AuditFailedError (its root cause and
 * stage) when it fails, and with InterruptedError as soon as `io.signal` aborts.
 */
async function follow(
  handle: AuditHandle,
  io: CliIo,
  view: ProgressView = progressView(io.progressStream ?? process.stderr),
): Promise<AuditResult> {
  let last: AuditProgress | undefined;
  try {
    return await followAudit(
      handle,
      (p) => {
        last = p ?? last;
        view.update(p);
      },
      1000,
      io.signal,
    );
  } catch (err) {
    if (io.signal?.aborted) throw interruptOf(io.signal);
    if (err instanceof WorkflowFailedError) throw new AuditFailedError(await explainFailure(handle, err, last));
    throw err;
  } finally {
    view.stop();
  }
}

/** Where a closed audit failed, why, and whether fixing the input is what it takes. */
function failureLines(f: AuditFailure, prefix: string): string {
  const where = f.stage ? `${f.stage}: ` : '';
  const kind = f.badInput
    ? 'bad input: no retry can fix it; correct it and run again'
    : f.type === 'Cancelled' || f.type === 'Terminated'
      ? 'stopped from outside'
      : 'not an input problem: it may pass when run again';
  return `${prefix}${where}${f.message}\n  failure type ${f.type} (${kind}); audit ${f.workflowId}`;
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
      .option('--verbose', "print every line of the in-process worker's log")
      .addOption(
        new Option(
          '--on-interrupt <action>',
          'what the first Ctrl-C does to the audit: cancel it, or detach and leave it running (default: cancel an audit this run started, detach from one it attached to; SIGTERM always detaches)',
        ).choices(['cancel', 'detach']),
      ),
  ).action(async (file: string, opts: Record<string, unknown>) => {
    const pipeline = await loadPipeline(file);
    // Until the audit has started, an interrupt only stops this process (workers, if any, first).
    let started: StartedAudit | undefined;
    const stopListening = onInterrupt(io.signal, (name) => {
      if (!started) io.err(`interrupted (${name}): stopping before the audit starts`);
    });
    await withSession(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch((err: unknown) =>
        io.err(`warning: could not check the custom search attributes: ${(err as Error).message}`),
      );
      const embedded = t.config.address === undefined;
      const inProcess = opts.worker !== false && (embedded || opts.worker === true) && !opts.detach;
      // On the embedded server this run (and any worker of its store) has queues of its own.
      const store = storeRoot();
      const audit = withUiUrl(embedded ? onStoreQueues(pipeline, store) : pipeline, t);
      const stopWorkers = new AbortController();
      let workersDone: Promise<void> | undefined;
      // Worker log lines go through the progress display so they do not break its bars.
      const view = progressView(io.progressStream ?? process.stderr);
      if (inProcess) {
        installRuntime('ERROR'); // stage progress is shown by the display; SDK warnings would only clutter it
        const workers = await createWorkers({
          connection: await t.nativeConnection(),
          namespace: t.config.namespace,
          taskQueues: audit.temporal.taskQueues,
          storeRoot: store,
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
        started = await startAudit(t.client, audit, undefined, io.signal).catch((err: unknown) => {
          throw io.signal?.aborted ? interruptOf(io.signal) : err;
        });
        io.err(`${started.attached ? 'attached to the running audit' : 'started audit'} ${started.workflowId}`);
        if (opts.detach) {
          view.stop();
          io.out(started.workflowId);
          return;
        }
        let result: AuditResult;
        try {
          result = await follow(started.handle, io, view);
        } catch (err) {
          if (!(err instanceof InterruptedError)) throw err;
          // Cancelling someone else's audit (one this run attached to) takes asking for it.
          const action = (opts.onInterrupt as InterruptAction | undefined) ?? (started.attached ? 'detach' : 'cancel');
          return await interruptRun(started, action, err.signalName, inProcess, io.err);
        }
        const files = await ensureLocalOutputs(result, pipeline, io);
        io.out(summary(result));
        for (const f of files) io.out(`wrote ${f}`);
      } finally {
        view.stop();
        // The workers stop only now: a cancelled audit needs them to close.
        stopWorkers.abort();
        await workersDone?.catch((err: unknown) => io.err(`worker stopped with an error: ${(err as Error).message}`));
      }
    }).finally(stopListening);
  });

  const handleFor = (t: TemporalSession, id: string): WorkflowHandle => t.client.workflow.getHandle(id);

  addConnectionOptions(
    program
      .command('status <workflowId>')
      .description("print the progress table of an audit once: every stage, retries, and a failed audit's cause"),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      const handle = handleFor(t, id);
      const d = await handle.describe();
      const closed = d.status.name !== 'RUNNING';
      const [p, retries] = await Promise.all([
        queryProgress(handle, QUERY_WAIT_MS),
        closed ? undefined : pendingRetries(handle).catch(() => undefined),
      ]);
      if (p) io.out(formatProgress(withRetries(p, retries)));
      else {
        io.out(`${id}: ${d.status.name} (no worker answered the progress query)`);
        for (const [row, retry] of retries ?? []) io.out(retryLine(row, retry));
      }
      // A closed run's failure needs no worker: the server has it.
      if (closed && d.status.name !== 'COMPLETED') {
        const failure = await handle.result().then(
          () => undefined,
          (err: unknown) => explainFailure(handle, err, p),
        );
        // A cancelled, terminated or timed-out run's message says so itself.
        if (failure) io.out(failureLines(failure, d.status.name === 'FAILED' ? 'failed: ' : ''));
      }
    });
  });

  addConnectionOptions(
    program.command('watch <workflowId>').description('follow an audit until it finishes (Ctrl-C stops watching; the audit keeps running)'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      const stopListening = onInterrupt(io.signal, () => io.err(`stopped watching; audit ${id} keeps running`));
      try {
        const result = await follow(t.client.workflow.getHandle(id) as AuditHandle, io);
        io.out(summary(result));
      } finally {
        stopListening();
      }
    });
  });

  addConnectionOptions(
    program
      .command('report <workflowId>')
      .description('print the report of a finished audit; --html: the path of its report.html; --out: write its outputs into a folder')
      .option('--html', 'print the path of the self-contained report.html (open it in a browser)')
      .option('--out <dir>', 'folder to write report.json, report.html and cleansed.jsonl into'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      // The workflow returns a reference; the outputs themselves are in the artifact store.
      const storeDir = await auditOutputsDir(t, id);
      if (typeof opts.out === 'string' || opts.html === true) {
        const missing = OUTPUT_FILES.filter((f) => !existsSync(join(storeDir, f)));
        if (missing.length)
          throw new Error(
            `${id}: its report artifact has no ${missing.join(', ')} (written before report.html existed); run the audit again: every stage but the report is a cache hit`,
          );
      }
      if (typeof opts.out === 'string') {
        const dir = resolve(opts.out);
        await copyOutputs(storeDir, dir);
        for (const f of OUTPUT_FILES) io.out(`wrote ${join(dir, f)}`);
      } else if (opts.html === true) io.out(join(storeDir, 'report.html'));
      else io.out((await readFile(join(storeDir, 'report.json'), 'utf8')).trimEnd());
    });
  });

  addScheduleCommands(program, io);

  addConnectionOptions(
    program
      .command('diff <a> <b>')
      .description('what changed from audit a to audit b; each is a workflow id or a folder holding report.json + cleansed.jsonl')
      .option('--json', 'print the AuditDiff object as JSON')
      .option('--show <n>', 'sample ids listed per change in the text', '5'),
  ).action(async (a: string, b: string, opts: Record<string, unknown>) => {
    const folders = [a, b].map((x) => (existsSync(join(x, 'report.json')) ? resolve(x) : undefined));
    // Folders need no server: connect only when a workflow id is given.
    const dirs = folders.every(Boolean)
      ? (folders as string[])
      : await withTemporal(opts, io, (t) => Promise.all([a, b].map((x, i) => folders[i] ?? auditOutputsDir(t, x))));
    const [before, after] = await Promise.all(dirs.map((dir, i) => readAuditOutputs(dir, [a, b][i]!)));
    const d = diffAudits(before!, after!);
    io.out(opts.json === true ? JSON.stringify(d, null, 2) : formatDiff(d, { show: Number(opts.show) }));
  });

  program
    .command('attack <name>')
    .description(
      'write a poisoned copy of a dataset for evaluating audits: an ImageFolder of PNGs, truth.json (poisoned and cover files) and preview.png',
    )
    .requiredOption('--dataset <root>', 'ImageFolder root of the clean dataset, or cifar10:train / cifar10:test')
    .requiredOption('--out <dir>', 'folder to create (must not exist, nor lie inside the dataset)')
    .option('--target <class>', 'target class index y_T', '0')
    .option('--rate <fraction>', 'fraction of the whole set poisoned', '0.1')
    .option('--seed <n>', 'attack seed', '1')
    .option('--image-size <px>', 'image side', '32')
    .option('--limit-per-class <n>', 'first n images of each class')
    .option('--set <key=value...>', "the attack's own options, as in a pipeline's attack section (eps=8, alpha=0.2, coverRate=0.01, ...)")
    .action(async (name: string, opts: Record<string, unknown>) => {
      const attack: Record<string, unknown> = { name, targetClass: Number(opts.target), rate: Number(opts.rate), seed: Number(opts.seed) };
      for (const kv of (opts.set as string[] | undefined) ?? []) {
        const [k, ...rest] = kv.split('=');
        const v = rest.join('=');
        if (!k || !rest.length) throw new InvalidArgumentError(`--set ${kv}: expected key=value`);
        attack[k] = v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
      }
      // Loaded here: it brings the attacks and TensorFlow, which no other command needs at start.
      const { exportAttack } = await import('./attack-command.js');
      const truth = await exportAttack({
        dataset: String(opts.dataset),
        out: String(opts.out),
        imageSize: Number(opts.imageSize),
        ...(opts.limitPerClass ? { limitPerClass: Number(opts.limitPerClass) } : {}),
        attack,
        log: (line) => io.err(line),
        ...(io.signal ? { signal: io.signal } : {}),
      });
      const out = resolve(String(opts.out));
      io.out(
        `${truth.poisoned.length} of ${truth.files.length} poisoned${truth.cover ? `, ${truth.cover.length} covers` : ''} (${name} -> class ${truth.targetClass})`,
      );
      io.out(`wrote ${out} (${join(out, 'truth.json')}, ${join(out, 'preview.png')})`);
    });

  addServiceCommands(program, io);

  return program;
}

/**
 * Runs the CLI; returns the exit code: 0, 2 when the input is wrong and no retry can fix it (a
 * pipeline file, usage, or an audit that failed with DatasetError, PipelineInputError or
 * CorruptArtifact), 1 for any other failure, 128 + the signal's number when interrupted (130).
 */
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
    if (err instanceof InterruptedError) return err.exitCode; // the command said what it did
    if (err instanceof AuditFailedError) {
      io.err(failureLines(err.failure, 'error: '));
      return err.failure.badInput ? 2 : 1;
    }
    io.err(`error: ${(err as Error).message}`);
    return 1;
  }
}
