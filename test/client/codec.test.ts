// client/codec.ts: AES-256-GCM payload encryption (round trips, wrong and rotated keys, the
// codec server), and on a real dev server an audit whose stored history is encrypted while the
// client still reads its result; also the TLS choice of client/connection.ts with an API key.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import {
  ENCRYPTED_ENCODING,
  EncryptionCodec,
  PAYLOAD_KEY_ENV,
  PAYLOAD_OLD_KEYS_ENV,
  parsePayloadKey,
  payloadDataConverter,
  payloadKeysFromEnv,
  startCodecServer,
  UNENCRYPTED_NOTICE,
} from '../../client/codec.js';
import { openTemporal, type TemporalSession } from '../../client/connection.js';
import { startAudit } from '../../client/audit.js';
import { loadPipeline } from '../../client/pipeline.js';
import type { AuditResult } from '../../workflows/types.js';
import { InProcessWorkers, TestServer, tinyImageFolder, writeTinyPipeline } from '../temporal-helpers.js';

const newKey = () => randomBytes(32);
const codecFor = (env: NodeJS.ProcessEnv) => new EncryptionCodec(payloadKeysFromEnv(env));
const meta = (p: Payload, k: string) => Buffer.from(p.metadata?.[k] ?? new Uint8Array()).toString('utf8');
const toPayload = (v: unknown) => defaultPayloadConverter.toPayload(v);
const fromPayload = (p: Payload) => defaultPayloadConverter.fromPayload(p);

/** Sets environment variables for one test (or suite) and puts the old values back. */
function withEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, val] of Object.entries(v)) {
      if (val === undefined) delete process.env[k];
      else process.env[k] = val;
    }
  };
  apply(vars);
  return () => apply(saved);
}

describe('payload codec (client/codec.ts)', function () {
  const keyA = newKey();
  const keyB = newKey();
  const envA = { [PAYLOAD_KEY_ENV]: keyA.toString('base64') };

  it('round-trips JSON, binary, empty and large payloads, each with its own IV', async function () {
    const codec = codecFor(envA);
    const big = randomBytes(8 * 1024 * 1024);
    const bigJson = { paths: Array.from({ length: 50_000 }, (_, i) => `/data/secret-set/class-${i % 10}/${i}.jpg`) };
    const values: unknown[] = [{ dataset: '/data/secret-set', n: 3 }, 'text', 0, null, undefined, new Uint8Array(), big, bigJson];
    const plain = values.map(toPayload);
    const encoded = await codec.encode(plain);
    expect(encoded).to.have.length(plain.length);
    for (const p of encoded) {
      expect(meta(p, 'encoding')).to.equal(ENCRYPTED_ENCODING);
      expect(meta(p, 'encryption-key-id')).to.equal(parsePayloadKey(keyA.toString('hex'), 'k').id);
    }
    // Nothing of the plaintext is left in the stored bytes.
    expect(Buffer.from(encoded[0].data!).includes('/data/secret-set')).to.equal(false);
    expect(Buffer.from(encoded[7].data!).includes('/data/secret-set')).to.equal(false);
    // 12-byte IV + 16-byte tag + the serialized Payload (metadata included).
    expect(encoded[6].data!.length).to.be.within(big.length + 28, big.length + 200);
    const again = await codec.encode([plain[0]]);
    expect(Buffer.from(again[0].data!).equals(Buffer.from(encoded[0].data!))).to.equal(false);

    const decoded = await codec.decode(encoded);
    for (let i = 0; i < plain.length; i++) {
      expect(meta(decoded[i], 'encoding'), `value ${i}`).to.equal(meta(plain[i], 'encoding'));
      expect(Buffer.from(decoded[i].data ?? []).equals(Buffer.from(plain[i].data ?? [])), `value ${i}`).to.equal(true);
    }
    expect(fromPayload(decoded[0])).to.deep.equal(values[0]);
    expect(Buffer.from(fromPayload(decoded[6]) as Uint8Array).equals(big)).to.equal(true);
    expect(fromPayload(decoded[7])).to.deep.equal(bigJson);
  });

  it('accepts a key as base64, base64url or hex, and refuses anything else without printing it', function () {
    const id = parsePayloadKey(keyA.toString('hex'), 'k').id;
    expect(parsePayloadKey(keyA.toString('base64'), 'k').id).to.equal(id);
    expect(parsePayloadKey(keyA.toString('base64url'), 'k').id).to.equal(id);
    expect(parsePayloadKey(` ${keyA.toString('base64')}\n`, 'k').id).to.equal(id);
    expect(parsePayloadKey(keyB.toString('hex'), 'k').id).to.not.equal(id);
    const short = randomBytes(16).toString('base64');
    expect(() => parsePayloadKey(short, PAYLOAD_KEY_ENV)).to.throw(`${PAYLOAD_KEY_ENV}: a key is 32 bytes`);
    try {
      parsePayloadKey(short, PAYLOAD_KEY_ENV);
    } catch (err) {
      expect((err as Error).message).to.not.contain(short);
    }
    expect(() => payloadKeysFromEnv({ [PAYLOAD_KEY_ENV]: 'not a key!' })).to.throw(/BACKDOOR_AUDIT_PAYLOAD_KEY: not a key/);
    expect(() => payloadKeysFromEnv({ ...envA, [PAYLOAD_OLD_KEYS_ENV]: `${keyB.toString('hex')},abc` })).to.throw(
      /BACKDOOR_AUDIT_PAYLOAD_KEYS entry 2/,
    );
  });

  it('passes payloads through without a key, says so once, and still decodes unencrypted histories', async function () {
    const notices: string[] = [];
    const converter = payloadDataConverter({}, (l) => notices.push(l));
    expect(notices).to.deep.equal([UNENCRYPTED_NOTICE]);
    const codec = converter.payloadCodecs![0];
    const plain = [toPayload({ a: 1 })];
    expect(await codec.encode(plain)).to.deep.equal(plain);
    expect(await codecFor(envA).decode(plain)).to.deep.equal(plain);
    const quiet: string[] = [];
    payloadDataConverter(envA, (l) => quiet.push(l));
    expect(quiet).to.deep.equal([]);
  });

  it('fails clearly on a payload encrypted with a key it does not have, or altered', async function () {
    const [enc] = await codecFor(envA).encode([toPayload({ secret: true })]);
    const idA = meta(enc, 'encryption-key-id');
    const idB = parsePayloadKey(keyB.toString('hex'), 'k').id;
    let message = '';
    await codecFor({ [PAYLOAD_KEY_ENV]: keyB.toString('hex') })
      .decode([enc])
      .catch((err: Error) => (message = err.message));
    expect(message).to.contain(`key ${idA}`).and.contain(idB).and.contain(PAYLOAD_OLD_KEYS_ENV);
    expect(message).to.not.contain(keyA.toString('base64')).and.not.contain(keyA.toString('hex'));
    await codecFor({})
      .decode([enc])
      .then(
        () => expect.fail('decoded without a key'),
        (err: Error) => expect(err.message).to.contain(`key ${idA}`).and.contain(`${PAYLOAD_KEY_ENV} is not set`),
      );
    const tampered = Buffer.from(enc.data!);
    tampered[20] ^= 1;
    await codecFor(envA)
      .decode([{ ...enc, data: tampered }])
      .then(
        () => expect.fail('decoded altered data'),
        (err: Error) => expect(err.message).to.contain(`key ${idA}`).and.contain('fails authentication'),
      );
  });

  it('rotates keys: old payloads decode with the old key in BACKDOOR_AUDIT_PAYLOAD_KEYS, new ones use the current key', async function () {
    const old = await codecFor(envA).encode([toPayload('written with A')]);
    const rotated = codecFor({ [PAYLOAD_KEY_ENV]: keyB.toString('base64'), [PAYLOAD_OLD_KEYS_ENV]: ` ${keyA.toString('hex')} ` });
    expect(fromPayload((await rotated.decode(old))[0])).to.equal('written with A');
    const fresh = await rotated.encode([toPayload('written with B')]);
    expect(meta(fresh[0], 'encryption-key-id')).to.equal(parsePayloadKey(keyB.toString('hex'), 'k').id);
    expect(fromPayload((await codecFor({ [PAYLOAD_KEY_ENV]: keyB.toString('hex') }).decode(fresh))[0])).to.equal('written with B');
    // A process that was given only the new key cannot read the old payloads, and says which key they need.
    await codecFor({ [PAYLOAD_KEY_ENV]: keyB.toString('hex') })
      .decode(old)
      .then(
        () => expect.fail('decoded with the wrong key'),
        (err: Error) => expect(err.message).to.contain(meta(old[0], 'encryption-key-id')),
      );
  });

  it('serves /decode and /encode to the UI origins it allows (codec server)', async function () {
    const codec = codecFor(envA);
    const server = await startCodecServer({ codec, port: 0, origins: ['http://localhost:8233'] });
    try {
      const [enc] = await codec.encode([toPayload({ dataset: '/data/x' })]);
      const json = {
        payloads: [
          {
            metadata: Object.fromEntries(Object.entries(enc.metadata!).map(([k, v]) => [k, Buffer.from(v!).toString('base64')])),
            data: Buffer.from(enc.data!).toString('base64'),
          },
        ],
      };
      const post = (path: string, body: unknown, origin?: string) =>
        fetch(`${server.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-namespace': 'default', ...(origin ? { origin } : {}) },
          body: JSON.stringify(body),
        });
      const res = await post('/decode', json, 'http://localhost:8233');
      expect(res.status).to.equal(200);
      expect(res.headers.get('access-control-allow-origin')).to.equal('http://localhost:8233');
      const out = (await res.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
      expect(Buffer.from(out.payloads[0].metadata.encoding, 'base64').toString()).to.equal('json/plain');
      expect(JSON.parse(Buffer.from(out.payloads[0].data, 'base64').toString())).to.deep.equal({ dataset: '/data/x' });

      const preflight = await fetch(`${server.url}/decode`, { method: 'OPTIONS', headers: { origin: 'http://localhost:8233' } });
      expect(preflight.status).to.equal(204);
      expect(preflight.headers.get('access-control-allow-headers')).to.contain('x-namespace');
      expect((await post('/decode', json, 'http://evil.example')).status).to.equal(403);
      expect((await post('/decode', json, 'http://localhost:9000')).status).to.equal(403); // not in the list given
      expect((await post('/encode', out)).status).to.equal(200); // no Origin: the CLI, curl
      expect((await post('/decode', { nope: 1 })).status).to.equal(400);
    } finally {
      await server.close();
    }
    // Without a list, any page served from loopback (the UI's port varies) and nothing else.
    const open = await startCodecServer({ codec, port: 0 });
    try {
      const preflight = (origin: string) => fetch(`${open.url}/decode`, { method: 'OPTIONS', headers: { origin } }).then((r) => r.status);
      expect(await preflight('http://127.0.0.1:9233')).to.equal(204);
      expect(await preflight('http://localhost:8080')).to.equal(204);
      expect(await preflight('http://localhost.evil.example')).to.equal(403);
    } finally {
      await open.close();
    }
  });
});

describe('encrypted payloads on a real dev server', function () {
  this.timeout(300_000);
  let dir: string;
  let server: TestServer;
  let session: TemporalSession | undefined;
  let workers: InProcessWorkers | undefined;
  let restoreEnv: () => void = () => undefined;
  const key = newKey();

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-codec-'));
    restoreEnv = withEnv({
      BACKDOOR_AUDIT_STATE: join(dir, 'state'),
      [PAYLOAD_KEY_ENV]: key.toString('base64'),
      [PAYLOAD_OLD_KEYS_ENV]: undefined,
      TEMPORAL_ADDRESS: undefined,
      TEMPORAL_API_KEY: undefined,
      TEMPORAL_TLS: undefined,
    });
    server = await TestServer.start(dir);
  });

  after(async function () {
    await workers?.stop();
    await session?.close();
    await server?.stop();
    restoreEnv();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores the workflow input encrypted while the client reads the result', async function () {
    // The client and the workers come from the project's own code paths (openTemporal, createWorkers).
    session = await openTemporal({ address: server.address });
    workers = await InProcessWorkers.start(server.address, join(dir, 'state', 'artifacts'), { client: session.client });
    const datasetRoot = await tinyImageFolder(join(dir, 'secret-dataset'), 3, 12);
    const file = await writeTinyPipeline(join(dir, 'tiny.yaml'), {
      datasetRoot,
      datasetName: 'tiny-codec',
      output: join(dir, 'out'),
      encoderEpochs: 1,
      flowEpochs: 1,
    });
    const started = await startAudit(session.client, await loadPipeline(file));
    const result = (await started.handle.result()) as AuditResult;
    expect(result.summary.samples).to.equal(36);

    const history = await started.handle.fetchHistory();
    const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    expect(input, 'first event input').to.not.equal(undefined);
    expect(meta(input!, 'encoding')).to.equal(ENCRYPTED_ENCODING);
    expect(meta(input!, 'encryption-key-id')).to.equal(parsePayloadKey(key.toString('hex'), 'k').id);
    const stored = Buffer.from(input!.data!);
    expect(() => JSON.parse(stored.toString('utf8'))).to.throw();
    expect(stored.includes(datasetRoot)).to.equal(false);
    const completed = history.events?.find((e) => e.workflowExecutionCompletedEventAttributes)?.workflowExecutionCompletedEventAttributes;
    expect(meta(completed!.result!.payloads![0], 'encoding')).to.equal(ENCRYPTED_ENCODING);
    // Nothing in the whole stored history (every string and byte field) names the dataset folder;
    // the search attributes, which the server indexes, hold the dataset's name in clear.
    const find = (text: string) => {
      const paths: string[] = [];
      const walk = (v: unknown, path: string): void => {
        if (typeof v === 'string' || v instanceof Uint8Array) {
          if (Buffer.from(v).includes(text)) paths.push(path);
        } else if (v && typeof v === 'object') {
          for (const [k, x] of Object.entries(v as Record<string, unknown>)) walk(x, `${path}.${k}`);
        }
      };
      walk(history, 'history');
      return paths;
    };
    expect(find('secret-dataset')).to.deep.equal([]);
    expect(find('tiny-codec').join('\n')).to.match(/searchAttributes/);

    // A client without the key gets an error that names the key it would need.
    const restore = withEnv({ [PAYLOAD_KEY_ENV]: undefined });
    const keyless = await openTemporal({ address: server.address });
    restore();
    try {
      await keyless.client.workflow
        .getHandle(started.workflowId)
        .result()
        .then(
          () => expect.fail('read the result without the key'),
          (err: Error) => expect(err.message).to.contain(meta(input!, 'encryption-key-id')),
        );
    } finally {
      await keyless.close();
    }
  });

  it('says which address and why TLS was on when an API key meets a plaintext server; TEMPORAL_TLS=false connects', async function () {
    const restore = withEnv({ TEMPORAL_API_KEY: 'not-a-real-key' });
    try {
      let message = '';
      await openTemporal({ address: server.address }).then(
        (s) => s.close(),
        (err: Error) => (message = err.message),
      );
      expect(message).to.contain(`cannot connect to Temporal at ${server.address}`);
      expect(message).to.contain('TLS on: TEMPORAL_API_KEY is set');
      expect(message).to.not.contain('not-a-real-key');
      process.env.TEMPORAL_TLS = 'false';
      const plain = await openTemporal({ address: server.address });
      try {
        expect(plain.config.tls).to.equal(undefined);
        expect(plain.config.tlsReason).to.equal('TEMPORAL_TLS=false');
        await plain.client.workflowService.getSystemInfo({});
      } finally {
        await plain.close();
      }
      process.env.TEMPORAL_TLS = 'maybe';
      await openTemporal({ address: server.address }).then(
        (s) => s.close().then(() => expect.fail('accepted TEMPORAL_TLS=maybe')),
        (err: Error) => expect(err.message).to.contain('TEMPORAL_TLS must be true or false'),
      );
    } finally {
      delete process.env.TEMPORAL_TLS;
      restore();
    }
  });
});
