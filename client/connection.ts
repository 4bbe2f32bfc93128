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
import { startDevServer, type DevServer } from './server.js';

export interface ConnectionFlags {
  address?: string;
  namespace?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsServerName?: string;
  /** Start the embedded server without its web UI. */
  ui?: boolean;
}

interface ConnectionConfig {
  /** Undefined: use the embedded dev server. */
  address?: string;
  namespace: string;
  tls?: { certFile?: string; keyFile?: string; caFile?: string; serverName?: string };
  apiKey?: string;
}

/** Flags win over the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY). */
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
  const wantTls = certFile || caFile || serverName || apiKey || env.TEMPORAL_TLS === 'true';
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
  return { address, ...(tls ? { tls } : {}), ...(cfg.apiKey ? { apiKey: cfg.apiKey } : {}) };
}

/** Embedded server location: BACKDOOR_AUDIT_TEMPORAL_PORT (default 7233), UI on port + 1000. */
export function embeddedPort(env: NodeJS.ProcessEnv = process.env): number {
  return Number(env.BACKDOOR_AUDIT_TEMPORAL_PORT ?? 7233);
}

export interface TemporalSession {
  config: ConnectionConfig;
  address: string;
  client: Client;
  connection: Connection;
  /** The embedded server, when this session uses (and possibly started) it. */
  server?: DevServer;
  /** A native connection for in-process workers (created on first use). */
  nativeConnection(): Promise<NativeConnection>;
  close(): Promise<void>;
}

/**
 * Connects to the configured Temporal, starting the embedded dev server when no address is
 * configured (detached, so it outlives this process and the next command reuses it).
 */
export async function openTemporal(flags: ConnectionFlags = {}, opts: { startServer?: boolean } = {}): Promise<TemporalSession> {
  const config = connectionConfig(flags);
  let server: DevServer | undefined;
  let address = config.address;
  if (!address) {
    const port = embeddedPort();
    if (opts.startServer === false) {
      address = `127.0.0.1:${port}`;
    } else {
      server = await startDevServer({ dbFile: join(stateDir(), 'temporal.db'), port, ui: flags.ui !== false, detached: true });
      address = server.address;
    }
  }
  const options = sdkOptions(config, address);
  const connection = await Connection.connect(options);
  const client = new Client({ connection, namespace: config.namespace });
  let native: Promise<NativeConnection> | undefined;
  return {
    config,
    address,
    client,
    connection,
    ...(server ? { server } : {}),
    nativeConnection: () => (native ??= NativeConnection.connect(options)),
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
