// Where Temporal is: an address given by flag or TEMPORAL_ADDRESS (with optional mTLS files
// and API key), or else the embedded dev server under the state folder. Secrets are read
// from files or the environment, handed to the SDK, and never logged or put into workflow
// input.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import { NativeConnection, type NativeConnectionOptions } from '@temporalio/worker';
import { SEARCH_ATTRIBUTE_TYPES } from '../workflows/definitions.js';
import { stateDir } from '../data/paths.js';
import { freeServerPort, PortTakenError, recordedPort, startDevServer, type DevServer } from './server.js';
import { payloadDataConverter } from './codec.js';

export interface ConnectionFlags {
  address?: string;
  namespace?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsServerName?: string;
  /** TLS on (true) or off (false) whatever else is set; undefined: TEMPORAL_TLS, else implied by the settings. */
  tls?: boolean;
  /** Start the embedded server without its web UI. */
  ui?: boolean;
}

interface ConnectionConfig {
  /** Undefined: use the embedded dev server. */
  address?: string;
  namespace: string;
  tls?: { certFile?: string; keyFile?: string; caFile?: string; serverName?: string };
  /** Why TLS is on or off, for connection errors (never holds a secret). */
  tlsReason: string;
  apiKey?: string;
}

/** TEMPORAL_TLS as a boolean; undefined when unset or empty. */
function envFlag(name: string, value: string | undefined): boolean | undefined {
  const v = value?.trim().toLowerCase();
  if (!v) return undefined;
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error(`${name} must be true or false, got "${value}"`);
}

/** Flags win over the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS, TEMPORAL_TLS_*, TEMPORAL_API_KEY). */
function connectionConfig(flags: ConnectionFlags = {}, env: NodeJS.ProcessEnv = process.env): ConnectionConfig {
  const address = flags.address ?? env.TEMPORAL_ADDRESS;
  const certFile = flags.tlsCert ?? env.TEMPORAL_TLS_CERT;
  const keyFile = flags.tlsKey ?? env.TEMPORAL_TLS_KEY;
  const caFile = flags.tlsCa ?? env.TEMPORAL_TLS_CA;
  const serverName = flags.tlsServerName ?? env.TEMPORAL_TLS_SERVER_NAME;
  const apiKey = env.TEMPORAL_API_KEY;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new Error('mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY (or --tls-cert and --tls-key)');
  }
  if (!address && (certFile || caFile || apiKey)) {
    throw new Error('TLS files or an API key were given without an address: set TEMPORAL_ADDRESS or --address');
  }
  // TLS is an explicit choice: a flag or TEMPORAL_TLS decides; otherwise certificates or a CA
  // imply it, and so does an API key (Temporal Cloud needs TLS; a plaintext server behind an API
  // key takes TEMPORAL_TLS=false). The reason is kept for the connection error.
  const explicit = flags.tls ?? envFlag('TEMPORAL_TLS', env.TEMPORAL_TLS);
  const explicitName = flags.tls !== undefined ? (flags.tls ? '--tls' : '--no-tls') : `TEMPORAL_TLS=${env.TEMPORAL_TLS?.trim()}`;
  const tlsFiles = certFile ? 'a client certificate (mTLS)' : caFile ? 'a server CA' : serverName ? 'a TLS server name' : undefined;
  if (explicit === false && tlsFiles) throw new Error(`${explicitName} contradicts the TLS settings also given (${tlsFiles})`);
  if (!address && (explicit || serverName)) throw new Error('TLS was asked for without an address: set TEMPORAL_ADDRESS or --address');
  const [wantTls, tlsReason]: [boolean, string] = !address
    ? [false, 'the embedded dev server on loopback']
    : explicit !== undefined
      ? [explicit, explicitName]
      : tlsFiles
        ? [true, `${tlsFiles} was given`]
        : apiKey
          ? [true, 'TEMPORAL_API_KEY is set, which implies TLS; TEMPORAL_TLS=false turns it off']
          : [false, 'no TLS setting; TEMPORAL_TLS=true turns it on'];
  return {
    ...(address ? { address } : {}),
    namespace: flags.namespace ?? env.TEMPORAL_NAMESPACE ?? 'default',
    ...(wantTls
      ? {
          tls: {
            ...(certFile ? { certFile } : {}),
            ...(keyFile ? { keyFile } : {}),
            ...(caFile ? { caFile } : {}),
            ...(serverName ? { serverName } : {}),
          },
        }
      : {}),
    tlsReason,
    ...(apiKey ? { apiKey } : {}),
  };
}

/** Connection options common to the client and the worker's native connection. */
function sdkOptions(cfg: ConnectionConfig, address: string): ConnectionOptions & NativeConnectionOptions {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`${file}: cannot read ${what}: ${(err as Error).message}`);
    }
  };
  const tls = cfg.tls
    ? {
        ...(cfg.tls.certFile && cfg.tls.keyFile
          ? { clientCertPair: { crt: read(cfg.tls.certFile, 'TLS certificate'), key: read(cfg.tls.keyFile, 'TLS key') } }
          : {}),
        ...(cfg.tls.caFile ? { serverRootCACertificate: read(cfg.tls.caFile, 'TLS CA certificate') } : {}),
        ...(cfg.tls.serverName ? { serverNameOverride: cfg.tls.serverName } : {}),
      }
    : undefined;
  // `tls: false` is passed explicitly: left undefined, the SDK turns TLS on whenever an API key is set.
  return { address, tls: tls ?? false, ...(cfg.apiKey ? { apiKey: cfg.apiKey } : {}) };
}

/** Names the address and the TLS choice in a failed connection, which the SDK's message does not. */
function connectError(cfg: ConnectionConfig, address: string, err: unknown): Error {
  const tls = `TLS ${cfg.tls ? 'on' : 'off'}: ${cfg.tlsReason}`;
  return new Error(`cannot connect to Temporal at ${address}: ${(err as Error).message} (${tls})`, { cause: err });
}

/** The SQLite file of the state folder's embedded server. */
const embeddedDbFile = () => join(stateDir(), 'temporal.db');

/**
 * The state folder's embedded server port: BACKDOOR_AUDIT_TEMPORAL_PORT, else the port its
 * server was last started or found on (recorded in the state folder), else 7233. UI on port + 1000.
 */
export function embeddedPort(): number {
  const given = process.env.BACKDOOR_AUDIT_TEMPORAL_PORT;
  return given ? Number(given) : (recordedPort(embeddedDbFile()) ?? 7233);
}

/**
 * Starts (or finds) the state folder's own server. When its usual port has become someone
 * else's, it moves to a free port (recorded for the next run) and `notice` says whose the
 * port was; an explicit BACKDOOR_AUDIT_TEMPORAL_PORT is never moved from: that is an error.
 */
async function startEmbedded(ui: boolean): Promise<{ server: DevServer; notice?: string }> {
  const options = { dbFile: embeddedDbFile(), ui, detached: true };
  const port = embeddedPort();
  try {
    return { server: await startDevServer({ ...options, port }) };
  } catch (err) {
    if (!(err instanceof PortTakenError)) throw err;
    if (process.env.BACKDOOR_AUDIT_TEMPORAL_PORT) {
      throw new Error(
        `${err.message} (BACKDOOR_AUDIT_TEMPORAL_PORT=${port}): set it to a free port, or unset it and this state folder picks one` +
          (err.owner ? `; to work in that state folder, set BACKDOOR_AUDIT_STATE=${err.owner}` : ''),
      );
    }
    const server = await startDevServer({ ...options, port: await freeServerPort(ui) });
    return { server, notice: `${err.message}; this state folder (${stateDir()}) has its own server on ${server.address}` };
  }
}

export interface TemporalSession {
  config: ConnectionConfig;
  address: string;
  client: Client;
  connection: Connection;
  /** The embedded server, when this session uses (and possibly started) it. */
  server?: DevServer;
  /** Why the embedded server is not on its usual port (another state folder's server was there). */
  notice?: string;
  /** A native connection for in-process workers (created on first use). */
  nativeConnection(): Promise<NativeConnection>;
  close(): Promise<void>;
}

/**
 * Connects to the configured Temporal, starting the state folder's embedded dev server when no
 * address is configured (detached, so it outlives this process and the next command of the same
 * state folder reuses it; another state folder's server is never reused).
 */
export async function openTemporal(flags: ConnectionFlags = {}, opts: { startServer?: boolean } = {}): Promise<TemporalSession> {
  const config = connectionConfig(flags);
  let server: DevServer | undefined;
  let notice: string | undefined;
  let address = config.address;
  if (!address) {
    if (opts.startServer === false) {
      address = `127.0.0.1:${embeddedPort()}`;
    } else {
      ({ server, notice } = await startEmbedded(flags.ui !== false));
      address = server.address;
    }
  }
  const options = sdkOptions(config, address);
  // Every payload the client sends or reads goes through the encryption codec (client/codec.ts);
  // built first so that a malformed key fails before anything connects.
  const dataConverter = payloadDataConverter();
  const connection = await Connection.connect(options).catch((err: unknown) => {
    throw connectError(config, address, err);
  });
  const client = new Client({ connection, namespace: config.namespace, dataConverter });
  let native: Promise<NativeConnection> | undefined;
  return {
    config,
    address,
    client,
    connection,
    ...(server ? { server } : {}),
    ...(notice ? { notice } : {}),
    nativeConnection: () =>
      (native ??= NativeConnection.connect(options).catch((err: unknown) => {
        native = undefined;
        throw connectError(config, address, err);
      })),
    close: async () => {
      if (native) await (await native).close();
      await connection.close();
    },
  };
}

/**
 * Registers the custom search attributes that are missing (a server started elsewhere, the
 * compose cluster). Servers that refuse the operator API (e.g. a cloud namespace with a
 * plain API key) are reported, not fatal: the attributes may have been added by an admin.
 */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const ops = connection.operatorService;
  const { customAttributes } = await ops.listSearchAttributes({ namespace });
  const missing = Object.keys(SEARCH_ATTRIBUTE_TYPES).filter((name) => !(customAttributes && name in customAttributes));
  if (missing.length === 0) return [];
  // temporal.api.enums.v1.IndexedValueType: KEYWORD = 2, KEYWORD_LIST = 7 (@temporalio/proto is
  // not a direct dependency, so its enum is not imported).
  type Request = Parameters<typeof ops.addSearchAttributes>[0];
  const searchAttributes: Record<string, number> = {};
  for (const name of missing) searchAttributes[name] = SEARCH_ATTRIBUTE_TYPES[name] === 'KeywordList' ? 7 : 2;
  await ops.addSearchAttributes({ namespace, searchAttributes } as Request);
  return missing;
}
