// Worker processes: task queue `audit-cpu` runs the workflows, the cache probes and the CPU
// stages; `audit-gpu` runs the GPU stages (SimCLR, retraining) one at a time. Usable embedded
// (the CLI's `run` starts both in-process) or alone (`backdoor-audit worker --queue ...`).
// On the embedded server the queues are per artifact store (`audit-cpu@<store hash>`, see
// embeddedTaskQueues), so a worker only ever takes tasks whose artifacts it can see.
import { resolve } from 'node:path';
import type { Client } from '@temporalio/client';
import {
  DefaultLogger,
  makeTelemetryFilterString,
  Runtime,
  Worker,
  type LogLevel,
  type NativeConnection,
  type WorkflowBundleOption,
} from '@temporalio/worker';
import { ArtifactStore } from '../data/artifacts.js';
import { sha256Hex } from '../data/hash.js';
import { storeRoot } from '../data/paths.js';
import { createActivities } from '../activities/index.js';
import { payloadDataConverter } from '../client/codec.js';
import { TASK_QUEUES, type PipelineTemporalOptions, type QueueKind } from '../workflows/types.js';
import { bundleWorkflows, prebuiltWorkflowBundle } from './bundle.js';

export type TaskQueueNames = PipelineTemporalOptions['taskQueues'];

/**
 * The task queues on the embedded server, which one machine's runs share whatever their stores:
 * the default names (`audit-cpu`, `audit-gpu`) become the store's own (`audit-cpu@<12 hex of
 * sha256(store root)>`), so runs with different stores never serve each other's audits, and a
 * `worker` given the same store (same path) derives the same names. Any other name was chosen
 * on purpose and is kept. Against a cluster the names are used as given: its workers share one store.
 */
export function embeddedTaskQueues(names: TaskQueueNames, store: string): TaskQueueNames {
  const tag = sha256Hex(resolve(store)).slice(0, 12);
  return {
    cpu: names.cpu === TASK_QUEUES.cpu ? `${TASK_QUEUES.cpu}@${tag}` : names.cpu,
    gpu: names.gpu === TASK_QUEUES.gpu ? `${TASK_QUEUES.gpu}@${tag}` : names.gpu,
  };
}

let bundle: Promise<WorkflowBundleOption> | undefined;

/**
 * The workflow bundle: the compiled build's prebuilt one, else bundled from the sources once
 * per process (worker/bundle.ts).
 */
export function workflowBundle(): Promise<WorkflowBundleOption> {
  const prebuilt = prebuiltWorkflowBundle();
  if (prebuilt) return Promise.resolve(prebuilt);
  bundle ??= bundleWorkflows().catch((err: unknown) => {
    bundle = undefined; // let a later call try again
    throw err;
  });
  return bundle;
}

let runtimeInstalled = false;

/** Sets the SDK's log level for this process (once, before the first worker or connection). */
export function installRuntime(level: LogLevel = 'WARN'): void {
  if (runtimeInstalled) return;
  // Native (Rust core) log lines obey the same level and go through the same logger.
  const core = level === 'TRACE' || level === 'DEBUG' || level === 'INFO' || level === 'WARN' ? level : 'ERROR';
  Runtime.install({
    // The process decides what a signal does (bin/backdoor-audit.js, runWorkers' AbortSignal): the
    // SDK's own SIGINT handler would shut the workers down at once, before `run` could cancel its audit.
    shutdownSignals: [],
    logger: new DefaultLogger(level),
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core, other: core }), forward: {} } },
  });
  runtimeInstalled = true;
}

export interface WorkerSetup {
  connection: NativeConnection;
  namespace?: string;
  /** Which queues to serve (default both). */
  queues?: QueueKind[];
  /** Task queue names (default TASK_QUEUES; an embedded run passes embeddedTaskQueues of its store). */
  taskQueues?: TaskQueueNames;
  /** Artifact store root (default storeRoot() of data/paths.ts). */
  storeRoot?: string;
  /** Lets training activities send epoch updates to the workflow's progress table. */
  client?: Client;
  log?: (line: string) => void;
  /** Concurrent activities on the CPU queue (default 2: per-class flows in parallel). */
  cpuConcurrency?: number;
  /** How long a workflow's next task waits for this worker before any worker may take it (default 10 s). */
  stickyQueueScheduleToStartTimeout?: string | number;
  /** Extra identity suffix (process id is always there). */
  identity?: string;
}

/** Creates (does not run) one Worker per requested queue. */
export async function createWorkers(setup: WorkerSetup): Promise<Worker[]> {
  const queues = setup.queues ?? ['cpu', 'gpu'];
  const names = setup.taskQueues ?? TASK_QUEUES;
  const store = new ArtifactStore(setup.storeRoot ?? storeRoot());
  await store.sweep();
  const activities = createActivities({
    store,
    ...(setup.client ? { client: setup.client } : {}),
    ...(setup.log ? { log: setup.log } : {}),
  });
  const common = {
    connection: setup.connection,
    namespace: setup.namespace ?? 'default',
    activities,
    // The same payload encryption as the clients (client/codec.ts): the codec runs here, in the
    // worker's main thread, never in the workflow sandbox.
    dataConverter: payloadDataConverter(),
    // Cancellation reaches an activity in a heartbeat response: heartbeat at least every 5 s so
    // a cancelled training stops within seconds, whatever its heartbeat timeout.
    maxHeartbeatThrottleInterval: '5s',
    defaultHeartbeatThrottleInterval: '5s',
    // On shutdown (SIGTERM, Ctrl-C), a stage still running after this is cancelled: training stops
    // at its next batch, keeps its checkpoint, and its attempt fails so another worker retries it.
    // The worker then waits for it to stop. Short, so that a stopped worker (SIGTERM, Ctrl-C on
    // `run`) exits within seconds instead of training on for the grace time.
    shutdownGraceTime: '2s',
    ...(setup.stickyQueueScheduleToStartTimeout !== undefined
      ? { stickyQueueScheduleToStartTimeout: setup.stickyQueueScheduleToStartTimeout }
      : {}),
  };
  const workers: Worker[] = [];
  for (const queue of queues) {
    const identity = `backdoor-audit-${queue}@${process.pid}${setup.identity ? `-${setup.identity}` : ''}`;
    if (queue === 'cpu') {
      workers.push(
        await Worker.create({
          ...common,
          identity,
          taskQueue: names.cpu,
          workflowBundle: await workflowBundle(),
          maxConcurrentActivityTaskExecutions: setup.cpuConcurrency ?? 2,
          // Cache probes are local activities on this worker: hashing a large artifact takes a while.
          maxConcurrentLocalActivityExecutions: 4,
        }),
      );
    } else {
      // One GPU job at a time: two trainings on one card only fight over its memory.
      workers.push(await Worker.create({ ...common, identity, taskQueue: names.gpu, maxConcurrentActivityTaskExecutions: 1 }));
    }
  }
  return workers;
}

/** Runs the workers until `signal` aborts (graceful shutdown) or one of them fails. */
export async function runWorkers(workers: Worker[], signal?: AbortSignal): Promise<void> {
  const stop = () => workers.forEach((w) => w.getState() === 'RUNNING' && w.shutdown());
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await Promise.all(workers.map((w) => w.run()));
  } catch (err) {
    stop();
    throw err;
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}
