// Payload encryption for everything this project sends to Temporal (workflow inputs and results,
// activity arguments, heartbeats, signals, queries, memos): the history holds dataset paths, the
// audit config and stage facts, which a shared cluster's database should not hold in clear.
// AES-256-GCM from node:crypto, a random 12-byte IV per payload, the key id in the payload's
// metadata so keys can rotate (encode uses the current key, decode any key it has).
//
// Runs in clients and in the worker's main thread only (the SDK applies codecs outside the
// workflow sandbox); workflow code must not import this module.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import protobuf from 'protobufjs/light.js';
import { METADATA_ENCODING_KEY, type DataConverter, type Payload, type PayloadCodec } from '@temporalio/common';

export const PAYLOAD_KEY_ENV = 'BACKDOOR_AUDIT_PAYLOAD_KEY';
export const PAYLOAD_OLD_KEYS_ENV = 'BACKDOOR_AUDIT_PAYLOAD_KEYS';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
const KEY_ID_KEY = 'encryption-key-id';
const CIPHER_KEY = 'encryption-cipher';
const CIPHER = 'AES-256-GCM';
const IV_BYTES = 12;
const TAG_BYTES = 16;

// The encrypted bytes are the whole original Payload (metadata + data) in the wire format of
// temporal.api.common.v1.Payload, so the original encoding comes back exactly. protobufjs is a
// direct dependency; @temporalio/proto is not.
const PayloadMessage = new protobuf.Type('Payload')
  .add(new protobuf.MapField('metadata', 1, 'string', 'bytes'))
  .add(new protobuf.Field('data', 2, 'bytes'));
new protobuf.Root().define('temporal.api.common.v1').add(PayloadMessage);

interface PlainPayload {
  metadata: Record<string, Uint8Array>;
  data: Uint8Array;
}

function serialize(p: Payload): Uint8Array {
  const metadata: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(p.metadata ?? {})) if (v) metadata[k] = v;
  return PayloadMessage.encode(PayloadMessage.fromObject({ metadata, data: p.data ?? new Uint8Array() })).finish();
}

function deserialize(bytes: Uint8Array): Payload {
  const o = PayloadMessage.toObject(PayloadMessage.decode(bytes), { bytes: Buffer, defaults: true }) as PlainPayload;
  return { metadata: o.metadata, data: o.data };
}

const utf8 = (bytes: Uint8Array | null | undefined) => (bytes ? Buffer.from(bytes).toString('utf8') : undefined);

export class PayloadKeyError extends Error {
  override name = 'PayloadKeyError';
}

export interface PayloadKey {
  /** Derived from the key (not secret): the same key has the same id on every machine. */
  id: string;
  key: Buffer;
}

/** A key's id: a truncated, domain-separated SHA-256, so nothing has to be configured twice. */
export function payloadKeyId(key: Buffer): string {
  return `k-${createHash('sha256').update('backdoor-audit payload key\0').update(key).digest('hex').slice(0, 16)}`;
}

/** 32 bytes as 64 hex digits or base64 (standard or URL-safe). `what` names it in errors; the value never appears. */
export function parsePayloadKey(text: string, what: string): PayloadKey {
  const t = text.trim();
  let key: Buffer;
  if (/^[0-9a-fA-F]{64}$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) key = Buffer.from(t, 'base64');
  else throw new PayloadKeyError(`${what}: not a key (32 bytes as base64 or 64 hex digits)`);
  if (key.length !== 32)
    throw new PayloadKeyError(`${what}: a key is 32 bytes (base64 or 64 hex digits), this one decodes to ${key.length}`);
  return { id: payloadKeyId(key), key };
}

export interface PayloadKeyring {
  /** Encrypts new payloads; undefined: payloads are sent as they are. */
  current?: PayloadKey;
  /** Every key decode may use, by id (the current one included). */
  keys: ReadonlyMap<string, Buffer>;
}

/** BACKDOOR_AUDIT_PAYLOAD_KEY (current) and BACKDOOR_AUDIT_PAYLOAD_KEYS (older ones, comma or space separated). */
export function payloadKeysFromEnv(env: NodeJS.ProcessEnv = process.env): PayloadKeyring {
  const keys = new Map<string, Buffer>();
  const currentText = env[PAYLOAD_KEY_ENV]?.trim();
  const current = currentText ? parsePayloadKey(currentText, PAYLOAD_KEY_ENV) : undefined;
  if (current) keys.set(current.id, current.key);
  const old = (env[PAYLOAD_OLD_KEYS_ENV] ?? '').split(/[\s,]+/).filter(Boolean);
  old.forEach((text, i) => {
    const k = parsePayloadKey(text, `${PAYLOAD_OLD_KEYS_ENV} entry ${i + 1}`);
    keys.set(k.id, k.key);
  });
  return { ...(current ? { current } : {}), keys };
}

/**
 * Encrypts every payload with the current key (none: passes them through) and decrypts those
 * marked `binary/encrypted` with whichever key their metadata names. Unencrypted payloads
 * decode as they are, so histories written before a key was set stay readable.
 */
export class EncryptionCodec implements PayloadCodec {
  constructor(readonly keyring: PayloadKeyring) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const current = this.keyring.current;
    if (!current) return payloads;
    return payloads.map((p) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', current.key, iv, { authTagLength: TAG_BYTES });
      // The key id and cipher are authenticated too: metadata cannot be swapped onto other data.
      cipher.setAAD(Buffer.from(`${CIPHER}:${current.id}`));
      const body = Buffer.concat([cipher.update(serialize(p)), cipher.final()]);
      return {
        metadata: {
          [METADATA_ENCODING_KEY]: Buffer.from(ENCRYPTED_ENCODING),
          [CIPHER_KEY]: Buffer.from(CIPHER),
          [KEY_ID_KEY]: Buffer.from(current.id),
        },
        data: Buffer.concat([iv, body, cipher.getAuthTag()]),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => {
      if (utf8(p.metadata?.[METADATA_ENCODING_KEY]) !== ENCRYPTED_ENCODING) return p;
      const keyId = utf8(p.metadata?.[KEY_ID_KEY]) ?? '(none)';
      const cipherName = utf8(p.metadata?.[CIPHER_KEY]) ?? CIPHER;
      if (cipherName !== CIPHER) throw new PayloadKeyError(`payload encrypted with ${cipherName}, which this version cannot decrypt`);
      const key = this.keyring.keys.get(keyId);
      if (!key) throw new PayloadKeyError(this.unknownKeyMessage(keyId));
      const raw = p.data ?? new Uint8Array();
      const data = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength); // a view, not a copy
      if (data.length < IV_BYTES + TAG_BYTES)
        throw new PayloadKeyError(`payload encrypted with key ${keyId} is truncated (${data.length} bytes)`);
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(`${CIPHER}:${keyId}`));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new PayloadKeyError(`payload encrypted with key ${keyId} fails authentication: it was altered or truncated`);
      }
      return deserialize(plain);
    });
  }

  private unknownKeyMessage(keyId: string): string {
    const known = [...this.keyring.keys.keys()];
    if (known.length === 0) {
      return `payload encrypted with key ${keyId}, but ${PAYLOAD_KEY_ENV} is not set in this process: set it (or ${PAYLOAD_OLD_KEYS_ENV}) to that key`;
    }
    return `payload encrypted with key ${keyId}, which this process does not have (it has ${known.join(', ')}): add that key to ${PAYLOAD_OLD_KEYS_ENV}`;
  }
}

export const UNENCRYPTED_NOTICE =
  `payloads are not encrypted: ${PAYLOAD_KEY_ENV} is not set, so workflow inputs and results (dataset paths, ` +
  'audit config) are stored in clear in the Temporal history; fine for the embedded dev server on loopback, set it for a shared cluster';

let noticeShown = false;
/** Writes the notice to stderr once per process (the client and the workers both build a converter). */
function stderrOnce(line: string): void {
  if (noticeShown) return;
  noticeShown = true;
  process.stderr.write(`${line}\n`);
}

/**
 * The data converter of every client and worker this project creates. The codec is installed
 * even without a key, so an encrypted payload reaching a keyless process fails with a message
 * that names the key instead of an unknown-encoding error.
 */
export function payloadDataConverter(env: NodeJS.ProcessEnv = process.env, notice: (line: string) => void = stderrOnce): DataConverter {
  const keyring = payloadKeysFromEnv(env);
  if (!keyring.current) notice(UNENCRYPTED_NOTICE);
  return { payloadCodecs: [new EncryptionCodec(keyring)] };
}

// ---- Codec server: lets the Temporal UI (or `temporal --codec-endpoint`) show decrypted payloads.

interface JsonPayload {
  metadata?: Record<string, string> | null;
  data?: string | null;
}

const fromJson = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data ?? '', 'base64'),
});

const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? new Uint8Array()).toString('base64')]),
  ),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

export interface CodecServerOptions {
  codec: PayloadCodec;
  port?: number;
  /** Loopback by default: whoever reaches the server can decrypt every payload. */
  host?: string;
  /** Browser origins allowed to call it (the UI's address); default: any page served from loopback. */
  origins?: string[];
  /** Largest request body accepted. */
  maxBodyBytes?: number;
}

export interface CodecServer {
  url: string;
  close(): Promise<void>;
}

/** The remote codec protocol of the Temporal UI and CLI: POST .../encode and .../decode, `{ payloads: [...] }` in and out. */
export async function startCodecServer(o: CodecServerOptions): Promise<CodecServer> {
  // The UI's port varies (the embedded server's port + 1000, compose's 8080), so by default any
  // loopback page may call it; a page from elsewhere never gets a decrypted payload.
  const allowed = (origin: string) =>
    o.origins ? o.origins.includes(origin) : /^https?:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/.test(origin);
  const maxBody = o.maxBodyBytes ?? 64 * 1024 * 1024;
  const reply = (res: ServerResponse, status: number, body: string, type = 'text/plain') => {
    res.writeHead(status, { 'content-type': type }).end(body);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const origin = req.headers.origin;
    // Refused outright rather than only left without CORS headers: the request is not even decoded.
    if (origin !== undefined && !allowed(origin)) return reply(res, 403, `origin ${origin} is not allowed\n`);
    if (origin) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-allow-credentials', 'true');
      res.setHeader('vary', 'origin');
    }
    if (req.method === 'OPTIONS') {
      res.setHeader('access-control-allow-methods', 'POST, OPTIONS');
      res.setHeader('access-control-allow-headers', 'content-type, x-namespace, authorization');
      return reply(res, 204, '');
    }
    const op = req.url?.split('?')[0].match(/\/(encode|decode)$/)?.[1];
    if (req.method !== 'POST' || !op) return reply(res, 404, 'POST /encode or /decode\n');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > maxBody) return reply(res, 413, `request larger than ${maxBody} bytes\n`);
      chunks.push(chunk as Buffer);
    }
    let payloads: Payload[];
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { payloads?: JsonPayload[] };
      if (!Array.isArray(body.payloads)) throw new Error('no payloads array');
      payloads = body.payloads.map(fromJson);
    } catch (err) {
      return reply(res, 400, `bad request: ${(err as Error).message}\n`);
    }
    try {
      const out = op === 'encode' ? await o.codec.encode(payloads) : await o.codec.decode(payloads);
      reply(res, 200, JSON.stringify({ payloads: out.map(toJson) }), 'application/json');
    } catch (err) {
      reply(res, 422, `${(err as Error).message}\n`);
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) reply(res, 500, `${(err as Error).message}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8888, o.host ?? '127.0.0.1', () => resolveListen());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
