// Runs isolated by construction (issue 13): on one dev server, audits of different artifact
// stores run on their stores' own task queues and never in each other's workers; a worker
// sent an artifact its store does not have says so; and each state folder has its own
// embedded server, telling whose server it found on a port it cannot use. Loopback only: a
// TestServer and embedded servers on free ports, temporary state folders.
import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Connection, WorkflowFailedError, type Client } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { main } from '../../client/cli.js';
import { startAudit } from '../../client/audit.js';
import { embeddedPort, openTemporal } from '../../client/connection.js';
import { loadPipeline } from '../../client/pipeline.js';
import { serverOwner } from '../../client/server.js';
import { ArtifactStore, type ArtifactRef } from '../../data/artifacts.js';
import { CorruptArtifactError, StageRun, type StageRuntime } from '../../activities/stage.js';
import { createWorkers, embeddedTaskQueues, installRuntime, runWorkers, type TaskQueueNames } from '../../worker/index.js';
import { TASK_QUEUES, type AuditResult, type Pipeline, type StageRequest } from '../../workflows/types.js';
import {
  connectClient,
  freePort,
  saveServerEnv,
  stopEmbeddedServer,
  TestServer,
  tinyImageFolder,
  waitFor,
  writeTinyPipeline,
} from '../temporal-helpers.js';

/** Workers of one store on its embedded queues, with an identity that names the store. */
class StoreWorkers {
  private constructor(
    readonly name: string,
    readonly store: string,
    readonly queues: TaskQueueNames,
    private readonly done: Promise<void>,
    private readonly abort: AbortController,
    private readonly connection: NativeConnection,
  ) {}

  static async start(address: string, name: string, store: string, client: Client): Promise<StoreWorkers> {
    installRuntime('ERROR');
    const connection = await NativeConnection.connect({ address });
    const queues = embeddedTaskQueues(TASK_QUEUES, store);
    const workers = await createWorkers({
      connection,
      storeRoot: store,
      taskQueues: queues,
      client,
      identity: name,
      log: () => undefined,
      stickyQueueScheduleToStartTimeout: '2s',
    });
    const abort = new AbortController();
    const done = runWorkers(workers, abort.signal);
    done.catch(() => undefined);
    return new StoreWorkers(name, store, queues, done, abort, connection);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done.catch(() => undefined);
    await this.connection.close();
  }
}

const onQueues = (p: Pipeline, taskQueues: TaskQueueNames): Pipeline => ({ ...p, temporal: { ...p.temporal, taskQueues } });

/** Every message along an error's cause chain. */
function messages(err: unknown): string {
  const out: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) out.push(e.message);
  return out.join(' <- ');
}

interface Execution {
  workflowId: string;
  taskQueue: string;
  /** Identities of the workers that took its workflow and activity tasks. */
  identities: string[];
  /** Task queues its activities were scheduled on. */
  activityQueues: string[];
}

/** The audit workflow and its child workflows, with who ran what. */
async function executionsOf(client: Client, workflowId: string): Promise<Execution[]> {
  const out: Execution[] = [];
  const pending = [workflowId];
  while (pending.length) {
    const id = pending.pop() as string;
    const handle = client.workflow.getHandle(id);
    const { taskQueue } = await handle.describe();
    const { events } = await handle.fetchHistory();
    const e: Execution = { workflowId: id, taskQueue, identities: [], activityQueues: [] };
    for (const ev of events ?? []) {
      const child = ev.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
      if (child) pending.push(child);
      const identity = ev.workflowTaskStartedEventAttributes?.identity ?? ev.activityTaskStartedEventAttributes?.identity;
      if (identity) e.identities.push(identity);
      const queue = ev.activityTaskScheduledEventAttributes?.taskQueue?.name;
      if (queue) e.activityQueues.push(queue);
    }
    out.push(e);
  }
  return out;
}

describe('runs isolated by store on one dev server', function () {
  this.timeout(300_000);
  let dir: string;
  let server: TestServer;
  let client: Client;
  let connection: Connection;
  let a: StoreWorkers;
  let b: StoreWorkers;
  let dataA: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-isolation-'));
    server = await TestServer.start(dir);
    ({ client, connection } = await connectClient(server.address));
    dataA = await tinyImageFolder(join(dir, 'data-a'), 2, 10);
    a = await StoreWorkers.start(server.address, 'store-a', join(dir, 'store-a'), client);
    b = await StoreWorkers.start(server.address, 'store-b', join(dir, 'store-b'), client);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await connection?.close();
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('names the queues after the store: same path, same names; explicit names kept', () => {
    const qa = embeddedTaskQueues(TASK_QUEUES, '/data/store-a');
    expect(qa.cpu).to.match(/^audit-cpu@[0-9a-f]{12}$/);
    expect(qa.gpu).to.equal(qa.cpu.replace('audit-cpu', 'audit-gpu'));
    expect(embeddedTaskQueues(TASK_QUEUES, '/data/store-a/../store-a')).to.deep.equal(qa);
    expect(embeddedTaskQueues(TASK_QUEUES, '/data/store-b').cpu).to.not.equal(qa.cpu);
    expect(embeddedTaskQueues({ cpu: 'my-cpu', gpu: TASK_QUEUES.gpu }, '/data/store-a')).to.deep.equal({ cpu: 'my-cpu', gpu: qa.gpu });
  });

  it('runs two audits of two stores at once, each only in its own store and workers', async function () {
    const dataB = await tinyImageFolder(join(dir, 'data-b'), 3, 8);
    const file = (n: string) => join(dir, `${n}.yaml`);
    await writeTinyPipeline(file('a'), {
      name: 'iso-a',
      datasetRoot: dataA,
      datasetName: 'iso-a',
      output: join(dir, 'out-a'),
      encoderEpochs: 1,
      flowEpochs: 1,
    });
    await writeTinyPipeline(file('b'), {
      name: 'iso-b',
      datasetRoot: dataB,
      datasetName: 'iso-b',
      output: join(dir, 'out-b'),
      encoderEpochs: 1,
      flowEpochs: 1,
    });
    const [startedA, startedB] = await Promise.all([
      startAudit(client, onQueues(await loadPipeline(file('a')), a.queues)),
      startAudit(client, onQueues(await loadPipeline(file('b')), b.queues)),
    ]);
    const [resultA, resultB] = (await Promise.all([startedA.handle.result(), startedB.handle.result()])) as [AuditResult, AuditResult];
    expect(resultA.summary.samples).to.equal(20);
    expect(resultB.summary.samples).to.equal(24);
    for (const out of ['out-a', 'out-b']) expect(existsSync(join(dir, out, 'report.json')), out).to.equal(true);
    // Each report artifact is in its own store only.
    expect(existsSync(join(a.store, resultA.reportRef.key))).to.equal(true);
    expect(existsSync(join(b.store, resultA.reportRef.key))).to.equal(false);
    expect(existsSync(join(b.store, resultB.reportRef.key))).to.equal(true);
    expect(existsSync(join(a.store, resultB.reportRef.key))).to.equal(false);

    for (const [w, started] of [
      [a, startedA],
      [b, startedB],
    ] as const) {
      const executions = await executionsOf(client, started.workflowId);
      expect(executions.length, `${w.name}: audit + one child per class`).to.be.at.least(3);
      for (const e of executions) {
        expect(e.taskQueue, e.workflowId).to.equal(w.queues.cpu);
        expect(e.identities, e.workflowId).to.not.be.empty;
        for (const id of e.identities) expect(id, `${e.workflowId} ran in ${id}`).to.match(new RegExp(`-${w.name}$`));
        for (const q of e.activityQueues) expect([w.queues.cpu, w.queues.gpu], e.workflowId).to.include(q);
      }
      expect(executions.flatMap((e) => e.activityQueues)).to.include(w.queues.gpu); // the encoder ran on the store's GPU queue
    }
  });

  it("fails with the store's name, not a hash mismatch, when a worker is sent another store's artifact", async function () {
    // Misconfigured on purpose: CPU stages on store A's queue, the GPU stage (SimCLR) on store B's.
    const file = join(dir, 'cross.yaml');
    await writeTinyPipeline(file, {
      name: 'iso-cross',
      datasetRoot: dataA,
      datasetName: 'iso-a',
      output: join(dir, 'out-cross'),
      encoderEpochs: 1,
      flowEpochs: 1,
      seed: 5,
    });
    const started = await startAudit(client, onQueues(await loadPipeline(file), { cpu: a.queues.cpu, gpu: b.queues.gpu }));
    const err = await started.handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(WorkflowFailedError);
    const text = messages(err);
    expect(text).to.contain(`is not in this worker's store ${resolve(b.store)}: the run and this worker use different stores`);
    expect(text).to.match(/encoder: input 'dataset': artifact [0-9a-f]{64} \((attack|ingest)\)/);
    expect(text).to.not.contain('does not match its hashes');
  });
});

describe("StageRun.input: an artifact the worker's store does not have", function () {
  let dir: string;
  const runtime: StageRuntime = { attempt: 1, heartbeat: () => undefined, log: () => undefined };
  const runOf = (store: ArtifactStore, ref: ArtifactRef) => {
    const req: StageRequest = { stage: 'flow', label: 'flow[0]', params: {}, inputs: { features: ref } };
    return new StageRun(req, store, runtime, join(dir, 'out'), join(dir, 'work'));
  };
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e as Error,
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-missing-input-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is a non-retryable input error naming the store and the key; a damaged or quarantined one is CorruptArtifact', async () => {
    const mine = new ArtifactStore(join(dir, 'mine'));
    const ref = await mine.publish('features', 'k-features', (tmp) => writeFile(join(tmp, 'x.bin'), 'abc'));
    expect(await runOf(mine, ref).input('features')).to.equal(mine.dir(ref));

    const other = new ArtifactStore(join(dir, 'other'));
    const missing = await failure(runOf(other, ref).input('features'));
    expect(missing?.name).to.equal('PipelineInputError'); // in NON_RETRYABLE
    expect(missing?.message).to.equal(
      `flow[0]: input 'features': artifact k-features (features) is not in this worker's store ${other.root}: the run and this worker use different stores`,
    );

    // Damaged: the first consumer quarantines it; one that comes after finds it gone, but was
    // here: both are CorruptArtifact, so the workflow recomputes it.
    await writeFile(join(mine.dir(ref), 'x.bin'), 'abd');
    for (const consumer of ['first', 'later']) {
      const damaged = await failure(runOf(mine, ref).input('features'));
      expect(damaged, consumer).to.be.instanceOf(CorruptArtifactError);
      expect(damaged?.message, consumer).to.contain('does not match its hashes');
    }
    expect(existsSync(mine.dir(ref))).to.equal(false);
  });
});

describe('embedded dev servers: one per state folder', function () {
  this.timeout(180_000);
  const savedEnv = saveServerEnv();
  let stateA: string;
  let stateB: string;
  /** Datasets, pipelines and outputs: outside every state folder. */
  let work: string;
  let portA: number;

  const use = (state: string, port?: number) => {
    process.env.BACKDOOR_AUDIT_STATE = state;
    if (port === undefined) delete process.env.BACKDOOR_AUDIT_TEMPORAL_PORT;
    else process.env.BACKDOOR_AUDIT_TEMPORAL_PORT = String(port);
  };

  before(async () => {
    stateA = await mkdtemp(join(tmpdir(), 'backdoor-state-a-'));
    stateB = await mkdtemp(join(tmpdir(), 'backdoor-state-b-'));
    work = await mkdtemp(join(tmpdir(), 'backdoor-state-work-'));
    portA = await freePort();
    delete process.env.TEMPORAL_ADDRESS;
  });

  after(async () => {
    for (const state of [stateA, stateB]) await stopEmbeddedServer(state);
    savedEnv.restore();
    await rm(stateA, { recursive: true, force: true });
    await rm(stateB, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it('gives a second state folder its own server and says whose server it found', async function () {
    use(stateA, portA);
    const first = await openTemporal({ ui: false });
    await first.close();
    expect(first.server?.started).to.equal(true);
    expect(first.address).to.equal(`127.0.0.1:${portA}`);
    expect(await serverOwner(first.address)).to.equal(resolve(stateA));

    // An explicit port is never moved from: the error names the owner.
    use(stateB, portA);
    const refused = await openTemporal({ ui: false }).then(
      async (s) => (await s.close(), undefined),
      (e: unknown) => e as Error,
    );
    expect(refused?.message).to.contain(
      `127.0.0.1:${portA} is the embedded Temporal server of the state folder ${resolve(stateA)}, not of ${resolve(stateB)}`,
    );
    expect(refused?.message).to.contain(`BACKDOOR_AUDIT_TEMPORAL_PORT=${portA}`);

    // B's usual port (recorded in its state folder) is now A's: B gets a server of its own.
    use(stateB);
    await writeFile(join(stateB, 'temporal.db.port'), `${portA}\n`);
    const second = await openTemporal({ ui: false });
    await second.close();
    expect(second.server?.started).to.equal(true);
    expect(second.address).to.not.equal(first.address);
    expect(second.notice).to.contain(`is the embedded Temporal server of the state folder ${resolve(stateA)}`);
    expect(await serverOwner(second.address)).to.equal(resolve(stateB));
    expect(`127.0.0.1:${embeddedPort()}`).to.equal(second.address); // recorded: the UI line and the next run use it

    const again = await openTemporal({ ui: false });
    await again.close();
    expect(again.server?.started).to.equal(false);
    expect(again.address).to.equal(second.address);
    expect(again.notice).to.equal(undefined);

    // A's server, found again by A.
    use(stateA);
    const back = await openTemporal({ ui: false });
    await back.close();
    expect(back.server?.started).to.equal(false);
    expect(back.address).to.equal(first.address);
  });

  it('adopts a server of its own state folder that has no owner recorded (started by an older version)', async function () {
    use(stateA, portA);
    const c = await Connection.connect({ address: `127.0.0.1:${portA}` });
    try {
      await c.workflowService.updateNamespace({ namespace: 'default', updateInfo: { data: { 'backdoor-audit-state': '' } } });
      expect(await serverOwner(`127.0.0.1:${portA}`)).to.equal(undefined);
      const s = await openTemporal({ ui: false });
      await s.close();
      expect(s.server?.started).to.equal(false);
      expect(await serverOwner(`127.0.0.1:${portA}`)).to.equal(resolve(stateA));
    } finally {
      await c.close();
    }
  });

  it("puts an embedded `run`, and a schedule created there, on the state folder's store queues", async function () {
    use(stateB);
    const own = embeddedTaskQueues(TASK_QUEUES, join(stateB, 'artifacts'));
    const data = await tinyImageFolder(join(work, 'data'), 2, 8);
    const file = join(work, 'run.yaml');
    await writeTinyPipeline(file, {
      name: 'iso-run',
      datasetRoot: data,
      datasetName: 'iso-run',
      output: join(work, 'out'),
      encoderEpochs: 1,
      flowEpochs: 1,
    });
    const err: string[] = [];
    const progressStream = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream;
    const io = { out: () => undefined, err: (t: string) => void err.push(t), progressStream };
    expect(await main(['run', file, '--no-ui'], io), err.join('\n')).to.equal(0);
    expect(existsSync(join(work, 'out', 'report.json'))).to.equal(true);
    const workflowId = (err.find((l) => l.startsWith('started audit ')) as string).slice('started audit '.length);
    expect(await main(['schedule', 'create', file, '--cron', '0 3 * * *', '--id', 'iso-nightly', '--paused'], io), err.join('\n')).to.equal(
      0,
    );

    const { client, connection } = await connectClient(`127.0.0.1:${embeddedPort()}`);
    try {
      expect((await client.workflow.getHandle(workflowId).describe()).taskQueue).to.equal(own.cpu);
      const action = (await client.schedule.getHandle('iso-nightly').describe()).action;
      expect(action.type === 'startWorkflow' ? action.taskQueue : undefined).to.equal(own.cpu);
      await client.schedule.getHandle('iso-nightly').delete();
    } finally {
      await connection.close();
    }
  });

  it("lets `worker --store` on the embedded server join that store's queues", async function () {
    use(stateB);
    const store = join(stateB, 'shared-store');
    const err: string[] = [];
    const stop = new AbortController();
    const io = { out: () => undefined, err: (t: string) => void err.push(t), signal: stop.signal };
    const done = main(['worker', '--queue', 'audit-cpu', '--store', store, '--no-ui'], io);
    try {
      await waitFor(
        () => err.some((l) => l.includes('connected to')),
        120_000,
        () => err.join('\n'),
      );
    } finally {
      stop.abort('SIGINT');
    }
    // A worker stopped by a signal exits with the shell's code for it (128 + 2).
    expect(await done, err.join('\n')).to.equal(130);
    const line = err.find((l) => l.includes('connected to')) as string;
    expect(line).to.contain(
      `worker on ${embeddedTaskQueues(TASK_QUEUES, store).cpu} (store ${store}) connected to 127.0.0.1:${embeddedPort()}`,
    );
  });
});
