// What every `backdoor-audit` command that talks to Temporal shares: the output streams, the
// connection options, a session (the embedded server started when no address is given) that an
// interrupt ends, and the pipeline as it runs on this session (its queues and UI address).
import type { Command } from 'commander';
import { stateDir } from '../data/paths.js';
import { embeddedTaskQueues } from '../worker/index.js';
import type { Pipeline } from '../workflows/types.js';
import { embeddedPort, openTemporal, type ConnectionFlags, type TemporalSession } from './connection.js';
import { InterruptedError, untilInterrupted } from './interrupt.js';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Progress display stream (bars on a TTY, lines otherwise). */
  progressStream?: NodeJS.WriteStream;
  /**
   * Aborted on the first SIGINT / SIGTERM by bin/, with the signal's name as its reason (a second
   * one exits at once); tests abort it themselves.
   */
  signal?: AbortSignal;
}

export const defaultIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

export function addConnectionOptions(cmd: Command): Command {
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

/** Runs `fn` with a session; an interrupt ends it at once (InterruptedError). */
export async function withTemporal<T>(opts: Record<string, unknown>, io: CliIo, fn: (t: TemporalSession) => Promise<T>): Promise<T> {
  return withSession(opts, io, (t) => untilInterrupted(io.signal, fn(t)));
}

/**
 * Runs `fn` with a session, for commands that handle interrupts themselves once connected (run
 * and worker stop what they started first); an interrupt while connecting ends it at once.
 */
export async function withSession<T>(opts: Record<string, unknown>, io: CliIo, fn: (t: TemporalSession) => Promise<T>): Promise<T> {
  const opening = openTemporal(flagsOf(opts));
  // Interrupted while connecting (or starting the embedded server): close what opens later.
  const session = await untilInterrupted(io.signal, opening).catch((err: unknown) => {
    if (err instanceof InterruptedError) void opening.then((s) => s.close()).catch(() => undefined);
    throw err;
  });
  if (session.notice) io.err(session.notice);
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

/** The pipeline as it runs on the embedded server: on the task queues of `store` (embeddedTaskQueues). */
export function onStoreQueues(pipeline: Pipeline, store: string): Pipeline {
  return { ...pipeline, temporal: { ...pipeline.temporal, taskQueues: embeddedTaskQueues(pipeline.temporal.taskQueues, store) } };
}

/**
 * Where the Temporal web UI of this session is, for the links in report.html:
 * BACKDOOR_AUDIT_TEMPORAL_UI when set, else the embedded server's (its frontend port + 1000).
 */
function uiUrlOf(t: TemporalSession, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.BACKDOOR_AUDIT_TEMPORAL_UI) return env.BACKDOOR_AUDIT_TEMPORAL_UI;
  if (t.config.address !== undefined) return undefined;
  const port = Number(t.address.split(':').pop());
  return Number.isInteger(port) ? `http://127.0.0.1:${port + 1000}` : undefined;
}

/** The pipeline with the session's UI address, which report.html links the workflow to. */
export function withUiUrl(pipeline: Pipeline, t: TemporalSession): Pipeline {
  const uiUrl = uiUrlOf(t);
  return uiUrl ? { ...pipeline, temporal: { ...pipeline.temporal, uiUrl } } : pipeline;
}
