// The long-running processes of `backdoor-audit`: `worker` (activity workers on the audit's task
// queues), `server` (the embedded Temporal dev server in the foreground) and `codec-server` (payload
// decryption for the Temporal UI). Each runs until interrupted.
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { stateDir, storeRoot } from '../data/paths.js';
import { createWorkers, embeddedTaskQueues, installRuntime, runWorkers } from '../worker/index.js';
import { TASK_QUEUES, type QueueKind } from '../workflows/types.js';
import { addConnectionOptions, withSession, type CliIo } from './cli-session.js';
import { EncryptionCodec, payloadKeysFromEnv, startCodecServer } from './codec.js';
import { embeddedPort, ensureSearchAttributes } from './connection.js';
import { interruptOf, onInterrupt } from './interrupt.js';
import { startDevServer } from './server.js';

function parseQueues(value: string): QueueKind[] {
  if (value === 'all') return ['cpu', 'gpu'];
  const queues = value.split(',').map((q) => q.trim().replace(/^audit-/, ''));
  for (const q of queues) if (q !== 'cpu' && q !== 'gpu') throw new Error(`unknown queue "${q}": use audit-cpu, audit-gpu or all`);
  return queues as QueueKind[];
}

export function addServiceCommands(program: Command, io: CliIo): void {
  addConnectionOptions(
    program
      .command('worker')
      .description('run a worker for one or both task queues until interrupted')
      .option('--queue <queue>', 'audit-cpu, audit-gpu or all', 'all')
      .option('--store <dir>', 'artifact store root (default BACKDOOR_AUDIT_STORE or .state/artifacts)')
      .option('--concurrency <n>', 'concurrent activities on the CPU queue', '2')
      .option('--cpu-queue <name>', "name of the CPU task queue (default audit-cpu; on the embedded server, its store's audit-cpu@<hash>)")
      .option('--gpu-queue <name>', "name of the GPU task queue (default audit-gpu; on the embedded server, its store's audit-gpu@<hash>)"),
  ).action(async (opts: Record<string, unknown>) => {
    const queues = parseQueues(String(opts.queue));
    installRuntime('WARN');
    const stopListening = onInterrupt(io.signal, (name) =>
      io.err(
        `${name}: shutting down; a running stage is cancelled at its next batch, keeps its checkpoint and is retried by another worker (signal again to exit at once)`,
      ),
    );
    await withSession(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch(() => undefined);
      const store = typeof opts.store === 'string' ? resolve(opts.store) : storeRoot();
      const names = {
        cpu: typeof opts.cpuQueue === 'string' ? opts.cpuQueue : TASK_QUEUES.cpu,
        gpu: typeof opts.gpuQueue === 'string' ? opts.gpuQueue : TASK_QUEUES.gpu,
      };
      // On the embedded server: the queues of the runs of the same store.
      const taskQueues = t.config.address === undefined ? embeddedTaskQueues(names, store) : names;
      const workers = await createWorkers({
        connection: await t.nativeConnection(),
        namespace: t.config.namespace,
        queues,
        taskQueues,
        storeRoot: store,
        cpuConcurrency: Number(opts.concurrency),
        client: t.client,
        log: (line) => io.err(line),
      });
      io.err(`worker on ${queues.map((q) => taskQueues[q]).join(', ')} (store ${store}) connected to ${t.address} (pid ${process.pid})`);
      if (io.signal?.aborted) throw interruptOf(io.signal); // while the workers were being created
      await runWorkers(workers, io.signal);
      if (io.signal?.aborted) throw interruptOf(io.signal);
    }).finally(stopListening);
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
      const signal = io.signal;
      if (!signal) return new Promise<never>(() => undefined); // runs until the process is killed
      if (!signal.aborted) await new Promise<void>((resolveStop) => signal.addEventListener('abort', () => resolveStop(), { once: true }));
      io.err(`${interruptOf(signal).signalName}: stopping the dev server`);
      await server.stop();
      throw interruptOf(signal);
    });

  program
    .command('codec-server')
    .description('decrypt payloads for the Temporal UI (Remote Codec Endpoint) and CLI (--codec-endpoint), on loopback')
    .option('--port <port>', 'port', '8888')
    .option('--host <host>', 'interface (whoever reaches it can decrypt every payload)', '127.0.0.1')
    .option('--origin <url...>', 'browser origins allowed (default: any page served from loopback)')
    .action(async (opts: Record<string, unknown>) => {
      const codec = new EncryptionCodec(payloadKeysFromEnv());
      const server = await startCodecServer({
        codec,
        port: Number(opts.port),
        host: String(opts.host),
        ...(Array.isArray(opts.origin) ? { origins: opts.origin.map(String) } : {}),
      });
      const keys = [...codec.keyring.keys.keys()].join(', ') || 'none: set BACKDOOR_AUDIT_PAYLOAD_KEY';
      io.err(`codec server on ${server.url} (keys ${keys}); in the Temporal UI: Configure data encoder -> ${server.url}`);
      const signal = io.signal;
      if (signal && !signal.aborted) await new Promise<void>((stop) => signal.addEventListener('abort', () => stop(), { once: true }));
      else if (!signal) await new Promise<never>(() => undefined); // runs until the process is killed
      await server.close();
    });
}
