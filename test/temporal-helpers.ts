// Test fixtures for the Temporal layer: a real `temporal server start-dev` (SQLite file, free
// loopback port, restartable), a tiny ImageFolder cut from the shared CIFAR-10 copy, pipeline
// files, in-process workers and worker child processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { stringify } from 'yaml';
import { ensureCifar10 } from '../data/cifar10.js';
import { startDevServer, type DevServer } from '../client/server.js';
import { payloadDataConverter } from '../client/codec.js';
import { repoRoot } from '../data/paths.js';
import { createWorkers, installRuntime, runWorkers } from '../worker/index.js';
import type { QueueKind } from '../workflows/types.js';

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/** A dev server on a free port with its own SQLite file; `restart` keeps the file and the port. */
export class TestServer {
  server!: DevServer;
  constructor(
    readonly dbFile: string,
    readonly port: number,
  ) {}

  static async start(dir: string): Promise<TestServer> {
    const s = new TestServer(join(dir, 'temporal.db'), await freePort());
    await s.boot();
    return s;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  private async boot(): Promise<void> {
    this.server = await startDevServer({ dbFile: this.dbFile, port: this.port, ui: false, startTimeoutS: 60 });
    if (!this.server.started) throw new Error(`port ${this.port} already had a server`);
  }

  /** Kills the server (SIGKILL: no clean shutdown) and starts it again on the same SQLite file. */
  async restart(): Promise<void> {
    await this.server.stop('SIGKILL');
    await this.boot();
  }

  async stop(): Promise<void> {
    await this.server.stop();
  }
}

/** `perClass` CIFAR-10 training images of each of the first `classes` classes, as an ImageFolder. */
export async function tinyImageFolder(dir: string, classes = 3, perClass = 12): Promise<string> {
  const cifar = await ensureCifar10();
  for (const name of cifar.classes.slice(0, classes)) {
    const src = join(cifar.train, name);
    const files = (await readdir(src)).sort().slice(0, perClass);
    await mkdir(join(dir, name), { recursive: true });
    for (const f of files) await copyFile(join(src, f), join(dir, name, f));
  }
  return dir;
}

export interface TinyPipelineOptions {
  name?: string;
  datasetRoot: string;
  datasetName: string;
  output: string;
  encoderEpochs?: number;
  flowEpochs?: number;
  seed?: number;
  heartbeatTimeouts?: Record<string, string>;
  workflowId?: string;
}

/** A pipeline YAML for the tiny dataset: BadNets on class 0, SimCLR width 4, 2-epoch flows, no retraining. */
export async function writeTinyPipeline(file: string, o: TinyPipelineOptions): Promise<string> {
  const doc = {
    name: o.name ?? 'tiny',
    dataset: { format: 'imagefolder', root: o.datasetRoot, imageSize: 32, name: o.datasetName },
    attack: { name: 'badnets', targetClass: 0, rate: 0.1, seed: 1 },
    audit: {
      seed: o.seed ?? 0,
      backend: 'auto',
      encoder: { kind: 'simclr', width: 4, epochs: o.encoderEpochs ?? 2, batchSize: 12, projectionDim: 16 },
      flow: { epochs: o.flowEpochs ?? 2, batchSize: 8, hidden: 16 },
      retrain: false,
    },
    output: o.output,
    temporal: {
      checkpointEvery: 1,
      maximumAttempts: 3,
      ...(o.workflowId ? { workflowId: o.workflowId } : {}),
      ...(o.heartbeatTimeouts ? { heartbeatTimeouts: o.heartbeatTimeouts } : {}),
    },
  };
  await writeFile(file, stringify(doc));
  return file;
}

/** A client with the project's payload codec, so it reads what the workers (createWorkers) write. */
export async function connectClient(address: string): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect({ address });
  return { client: new Client({ connection, dataConverter: payloadDataConverter() }), connection };
}

/** Workers running in this process until `stop()`. */
export class InProcessWorkers {
  private constructor(
    private readonly workers: Worker[],
    private readonly done: Promise<void>,
    private readonly abort: AbortController,
    private readonly connection: NativeConnection,
  ) {}

  static async start(
    address: string,
    storeRoot: string,
    o: { queues?: QueueKind[]; client?: Client; log?: (l: string) => void } = {},
  ): Promise<InProcessWorkers> {
    installRuntime('ERROR');
    const connection = await NativeConnection.connect({ address });
    const workers = await createWorkers({
      connection,
      storeRoot,
      queues: o.queues ?? ['cpu', 'gpu'],
      ...(o.client ? { client: o.client } : {}),
      log: o.log ?? (() => undefined),
      // A killed worker's workflows move to another worker quickly.
      stickyQueueScheduleToStartTimeout: '2s',
    });
    const abort = new AbortController();
    const done = runWorkers(workers, abort.signal);
    done.catch(() => undefined);
    return new InProcessWorkers(workers, done, abort, connection);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done.catch(() => undefined);
    await this.connection.close();
  }
}

/** `backdoor-audit worker` in a child process (kill -9 it to simulate a crashed machine). */
export class WorkerProcess {
  readonly output: string[] = [];
  private exited: Promise<void>;
  constructor(readonly child: ChildProcess) {
    const collect = (b: Buffer) => this.output.push(...b.toString().split('\n').filter(Boolean));
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    this.exited = new Promise((r) => child.once('exit', () => r()));
  }

  static spawn(args: string[], env: NodeJS.ProcessEnv): WorkerProcess {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'backdoor-audit.js'), 'worker', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new WorkerProcess(child);
  }

  /** Resolves when the worker has printed its "connected" line. */
  async ready(timeoutMs = 60_000): Promise<void> {
    await waitFor(
      () => this.output.some((l) => l.includes('connected to')),
      timeoutMs,
      () => `worker did not start:\n${this.output.join('\n')}`,
    );
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    this.child.kill(signal);
    await this.exited;
  }
}

export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: () => string,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Stops the embedded dev server whose pid a state folder recorded (SIGTERM), and waits until it is gone. */
export async function stopEmbeddedServer(state: string): Promise<void> {
  const pid = Number((await readFile(join(state, 'temporal.db.pid'), 'utf8').catch(() => '0')).trim());
  if (!(pid > 0)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  await waitFor(
    () => !alive(pid),
    15_000,
    () => `dev server ${pid} did not stop`,
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The embedded-server variables as they are now; `restore()` puts them back. */
export function saveServerEnv(): { restore(): void } {
  const names = ['BACKDOOR_AUDIT_STATE', 'BACKDOOR_AUDIT_TEMPORAL_PORT', 'TEMPORAL_ADDRESS'] as const;
  const saved = names.map((k) => [k, process.env[k]] as const);
  return {
    restore: () => {
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    },
  };
}
