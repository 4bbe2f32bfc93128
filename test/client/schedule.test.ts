// `backdoor-audit schedule` on a real dev server (own port and SQLite file): pause with a note,
// unpause, update the cron and the pipeline, backfill a window under the schedule's overlap
// policy, and `list` with each schedule's last verdict. The audits are a stand-in
// `auditWorkflow` (same name, same result shape) chosen by pipeline name, so each verdict is
// known and the tests take seconds instead of training encoders.
import { expect } from 'chai';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, Connection, ScheduleDescription } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Worker } from '@temporalio/worker';
import { main, type CliIo } from '../../client/cli.js';
import { payloadDataConverter } from '../../client/codec.js';
import { cronOfSpec, cronTimesIn, describeSchedule } from '../../client/schedule.js';
import { repoRoot } from '../../data/paths.js';
import { installRuntime } from '../../worker/index.js';
import { TASK_QUEUES } from '../../workflows/types.js';
import { connectClient, TestServer, tinyImageFolder, waitFor, writeTinyPipeline } from '../temporal-helpers.js';

/** The stand-in audit: its pipeline's name says how it ends (a real audit's result shape). */
const FAKE_WORKFLOWS = `
import { ApplicationFailure, condition } from '@temporalio/workflow';
export async function auditWorkflow(pipeline) {
  const result = (targetClasses) => ({
    workflowId: 'fake',
    summary: { datasetName: pipeline.name, samples: 4, targetClasses, counts: { kept: 4, relabelled: 0, dropped: 0 }, warnings: 0 },
    reportRef: { key: 'report-' + pipeline.name, stage: 'report', sha256: '', bytes: 0 },
    outputs: [],
  });
  if (pipeline.name === 'sched-poisoned') return result(['airplane']);
  if (pipeline.name === 'sched-clean') return result([]);
  if (pipeline.name === 'sched-fail') throw ApplicationFailure.nonRetryable('cannot decode image', 'DatasetError');
  await condition(() => false); // sched-hang: runs until terminated
}
`;

/** report.json + cleansed.jsonl of a two-class audit of 4 samples; `poisoned` flags airplane and relabels a0. */
async function writeFakeReport(dir: string, poisoned: boolean): Promise<void> {
  const classes = ['airplane', 'automobile'];
  const report = {
    dataset: { name: 'tiny', hash: '0'.repeat(64), samples: 4, classes },
    classes: classes.map((name, index) => ({
      index,
      name,
      count: 2,
      sND: poisoned && index === 0 ? 60 : 80,
      sNDNormalized: poisoned && index === 0 ? -3 : 0,
      sD: 0,
      flagged: poisoned && index === 0,
      kind: poisoned && index === 0 ? 'non-disruptive' : 'clean',
    })),
    targetClasses: poisoned ? [0] : [],
    counts: { kept: poisoned ? 3 : 4, relabelled: poisoned ? 1 : 0, dropped: 0 },
  };
  const entry = (id: string, label: number) =>
    poisoned && id === 'airplane/a0'
      ? { id, label, action: 'relabel', side: 'poisoned', newLabel: 1, reason: 'test' }
      : { id, label, action: 'keep', side: 'clean', reason: 'test' };
  const cleansed = [entry('airplane/a0', 0), entry('airplane/a1', 0), entry('automobile/c0', 1), entry('automobile/c1', 1)];
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'report.json'), JSON.stringify(report));
  await writeFile(join(dir, 'cleansed.jsonl'), cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
}

function captureIo(): { io: CliIo; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t) => void out.push(t), err: (t) => void err.push(t) }, out, err };
}

describe('backdoor-audit schedule: pause, unpause, update, backfill, list (real dev server)', function () {
  this.timeout(60_000);

  let dir: string;
  let server: TestServer;
  let client: Client;
  let connection: Connection;
  let worker: Worker;
  let workerDone: Promise<void>;
  let nativeConnection: NativeConnection;
  const pipelines: Record<string, string> = {};
  const savedStore = process.env.BACKDOOR_AUDIT_STORE;

  /** Runs the CLI against the test server; fails the test on a non-zero exit with what it printed. */
  async function cli(...args: string[]): Promise<string[]> {
    const c = captureIo();
    const code = await main([...args, '--address', server.address], c.io);
    expect(code, c.err.join('\n')).to.equal(0);
    return c.out;
  }

  const describeIt = (id: string): Promise<ScheduleDescription> => client.schedule.getHandle(id).describe();

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'backdoor-schedule-'));
    const datasetRoot = await tinyImageFolder(join(dir, 'data'), 2, 2);
    for (const name of ['sched-hang', 'sched-poisoned', 'sched-clean', 'sched-fail']) {
      pipelines[name] = await writeTinyPipeline(join(dir, `${name}.yaml`), {
        name,
        datasetRoot,
        datasetName: 'tiny',
        output: join(dir, `out-${name}`),
      });
    }
    // The stand-in audits' report artifacts, where `diff <workflowId>` looks for them.
    process.env.BACKDOOR_AUDIT_STORE = join(dir, 'store');
    await writeFakeReport(join(dir, 'store', 'report-sched-poisoned'), true);
    await writeFakeReport(join(dir, 'store', 'report-sched-clean'), false);
    const workflowsPath = join(dir, 'fake-workflows.js');
    await writeFile(workflowsPath, FAKE_WORKFLOWS);
    installRuntime('ERROR');
    const [s, bundle] = await Promise.all([
      TestServer.start(dir),
      bundleWorkflowCode({
        workflowsPath,
        logger: new DefaultLogger('WARN'),
        // The file lies outside the checkout: resolve @temporalio/workflow from the checkout's modules.
        webpackConfigHook: (config) => ({ ...config, resolve: { ...config.resolve, modules: [join(repoRoot, 'node_modules')] } }),
      }),
    ]);
    server = s;
    ({ client, connection } = await connectClient(server.address));
    nativeConnection = await NativeConnection.connect({ address: server.address });
    // With --address the schedule's audits go to the pipeline's queue, audit-cpu.
    worker = await Worker.create({
      connection: nativeConnection,
      taskQueue: TASK_QUEUES.cpu,
      workflowBundle: bundle,
      dataConverter: payloadDataConverter(),
    });
    workerDone = worker.run();
  });

  after(async function () {
    if (worker) {
      worker.shutdown();
      await workerDone.catch(() => undefined);
    }
    await nativeConnection?.close();
    await connection?.close();
    await server?.stop();
    if (savedStore === undefined) delete process.env.BACKDOOR_AUDIT_STORE;
    else process.env.BACKDOOR_AUDIT_STORE = savedStore;
    await rm(dir, { recursive: true, force: true });
  });

  it('pauses with a note, unpauses, and updates the cron and the pipeline', async function () {
    expect(await cli('schedule', 'create', pipelines['sched-hang']!, '--cron', '0 3 * * *', '--id', 'nightly')).to.deep.equal(['nightly']);

    expect(await cli('schedule', 'pause', 'nightly', '--note', 'dataset migration')).to.deep.equal(['paused nightly']);
    let d = await describeIt('nightly');
    expect(d.state.paused).to.equal(true);
    expect(d.state.note).to.equal('dataset migration');
    const paused = await describeSchedule(client, 'nightly');
    expect(paused.paused).to.equal(true);
    expect(paused.note).to.equal('dataset migration');

    const unpaused = await cli('schedule', 'unpause', 'nightly');
    expect(unpaused[0]).to.match(/^unpaused nightly; next run \d{4}-\d\d-\d\dT03:00:00\.000Z$/);
    expect((await describeIt('nightly')).state.paused).to.equal(false);

    // Paused again first, so that no cron time can start a run during the test.
    await cli('schedule', 'pause', 'nightly');
    const updated = await cli('schedule', 'update', 'nightly', '--cron', '30 4 * * 1-5');
    expect(updated[0]).to.equal('updated nightly: pipeline sched-hang, cron 30 4 * * 1-5, next run - (paused)');
    d = await describeIt('nightly');
    const cal = d.spec.calendars?.[0];
    expect(d.spec.calendars).to.have.length(1);
    expect(cal?.hour).to.deep.equal([{ start: 4, end: 4, step: 1 }]);
    expect(cal?.minute).to.deep.equal([{ start: 30, end: 30, step: 1 }]);
    expect(cal?.dayOfWeek).to.deep.equal([{ start: 'MONDAY', end: 'FRIDAY', step: 1 }]);
    expect(cronOfSpec(d.spec)).to.deep.equal(['30 4 * * 1-5']);
    expect(d.state.paused, 'an update keeps the pause').to.equal(true);
    const hangWorkflowId = d.action.workflowId;

    await cli('schedule', 'update', 'nightly', pipelines['sched-clean']!);
    d = await describeIt('nightly');
    expect((d.action.args?.[0] as { name?: string }).name).to.equal('sched-clean');
    expect(d.action.workflowId).to.match(/^audit-sched-clean-[0-9a-f]{16}$/);
    expect(d.action.workflowId).to.not.equal(hangWorkflowId);
    expect(d.action.taskQueue).to.equal(TASK_QUEUES.cpu);
    expect(cronOfSpec(d.spec), 'a pipeline-only update keeps the cron').to.deep.equal(['30 4 * * 1-5']);
    expect(d.policies.overlap).to.equal('SKIP');

    const usage = captureIo();
    expect(await main(['schedule', 'update', 'nightly', '--address', server.address], usage.io)).to.equal(2);
    expect(usage.err.join('\n')).to.contain('needs a pipeline file, --cron, or both');
    await cli('schedule', 'delete', 'nightly');
  });

  it("backfills a window under the schedule's overlap policy (SKIP: one audit, the rest skipped), or another one when asked", async function () {
    // Paused: backfills run anyway, and no cron time interferes.
    await cli('schedule', 'create', pipelines['sched-hang']!, '--cron', '0 3 * * *', '--id', 'bf-skip', '--paused');
    // Its own workflow id: runs of two schedules of one pipeline at the same time would share theirs.
    const other = await writeTinyPipeline(join(dir, 'sched-hang-2.yaml'), {
      name: 'sched-hang',
      datasetRoot: join(dir, 'data'),
      datasetName: 'tiny',
      output: join(dir, 'out-hang-2'),
      workflowId: 'audit-bf-all',
    });
    await cli('schedule', 'create', other, '--cron', '0 3 * * *', '--id', 'bf-all', '--paused');
    const window = ['--from', '2024-01-01T00:00:00Z', '--to', '2024-01-03T23:59:59Z'];
    expect(await cli('schedule', 'backfill', 'bf-skip', ...window)).to.deep.equal([
      'backfill of bf-skip accepted: 3 scheduled times in the window, overlap policy SKIP (a time is skipped while an audit of this schedule runs)',
    ]);
    expect(await cli('schedule', 'backfill', 'bf-all', ...window, '--overlap', 'allow-all')).to.deep.equal([
      'backfill of bf-all accepted: 3 scheduled times in the window, overlap policy ALLOW_ALL',
    ]);

    // SKIP: the 2024-01-01 audit starts and never ends, so the other two nights are skipped.
    await waitFor(
      async () => {
        const i = (await describeIt('bf-skip')).info;
        return i.numActionsTaken + i.numActionsSkippedOverlap === 3;
      },
      20_000,
      () => 'the SKIP backfill did not process its 3 times',
    );
    await waitFor(
      async () => (await describeIt('bf-all')).info.numActionsTaken === 3,
      20_000,
      () => 'the ALLOW_ALL backfill did not start 3 audits',
    );
    await new Promise((r) => setTimeout(r, 1000)); // nothing more may come
    const skip = await describeIt('bf-skip');
    expect(skip.info.numActionsTaken).to.equal(1);
    expect(skip.info.numActionsSkippedOverlap).to.equal(2);
    expect(skip.info.recentActions.map((a) => a.scheduledAt.toISOString())).to.deep.equal(['2024-01-01T03:00:00.000Z']);
    expect(skip.info.runningActions).to.have.length(1);
    const all = await describeIt('bf-all');
    expect(all.info.numActionsTaken).to.equal(3);
    expect(all.info.recentActions.map((a) => a.action.workflow.workflowId.slice(-20)).sort()).to.deep.equal([
      '2024-01-01T03:00:00Z',
      '2024-01-02T03:00:00Z',
      '2024-01-03T03:00:00Z',
    ]);
    expect((await describeSchedule(client, 'bf-skip')).lastRun?.verdict).to.equal('running');

    const bad = captureIo();
    expect(await main(['schedule', 'backfill', 'bf-skip', '--from', 'yesterday', '--to', '2024-01-03T00:00:00Z'], bad.io)).to.equal(2);
    expect(bad.err.join('\n')).to.contain('not an ISO 8601 date-time');
  });

  it("lists each schedule's cron, pause state and note, next run, and last run's verdict", async function () {
    for (const name of ['sched-poisoned', 'sched-clean', 'sched-fail']) {
      await cli('schedule', 'create', pipelines[name]!, '--cron', '15 2 * * *', '--id', name, '--paused');
      await cli('schedule', 'trigger', name); // a trigger runs even while paused
    }
    await cli('schedule', 'create', pipelines['sched-clean']!, '--cron', '0 3 * * 0', '--id', 'weekly');
    await cli('schedule', 'pause', 'weekly', '--note', 'holidays');
    await cli('schedule', 'create', pipelines['sched-clean']!, '--cron', '0 23 * * *', '--id', 'evening');
    await waitFor(
      async () => {
        const verdicts = await Promise.all(
          ['sched-poisoned', 'sched-clean', 'sched-fail'].map(async (id) => (await describeSchedule(client, id)).lastRun?.verdict),
        );
        return verdicts.every((v) => v !== undefined && v !== 'running');
      },
      20_000,
      () => 'the triggered audits did not finish',
    );
    let lines: string[] = [];
    const ids = ['sched-poisoned', 'sched-clean', 'sched-fail', 'bf-skip', 'bf-all', 'weekly', 'evening'];
    // The schedule listing is eventually consistent: wait until it has them all.
    await waitFor(
      async () => {
        lines = (await cli('schedule', 'list')).join('\n').split('\n');
        return ids.every((id) => lines.some((l) => l.startsWith(`${id} `)));
      },
      20_000,
      () => `schedule list lacks some of ${ids.join(', ')}:\n${lines.join('\n')}`,
    );
    const row = (id: string) => lines.find((l) => l.startsWith(`${id} `)) as string;
    expect(lines[0]).to.match(/^SCHEDULE\s+PIPELINE\s+CRON \(UTC\)\s+STATE\s+NEXT RUN\s+LAST RUN\s+VERDICT$/);
    expect(row('sched-poisoned')).to.match(
      /15 2 \* \* \*\s+paused \(created with --paused\)\s+-\s+audit-sched-poisoned-\S+\s+poisoned: airplane$/,
    );
    expect(row('sched-clean')).to.match(/\s+audit-sched-clean-\S+\s+clean$/);
    expect(row('sched-fail')).to.match(/\s+failed$/);
    expect(row('bf-skip')).to.match(/-2024-01-01T03:00:00Z\s+running$/);
    expect(row('weekly')).to.match(/^weekly\s+sched-clean\s+0 3 \* \* 0\s+paused \(holidays\)\s+-\s+-\s+-$/);
    expect(row('evening')).to.match(/^evening\s+sched-clean\s+0 23 \* \* \*\s+active\s+\d{4}-\d\d-\d\dT23:00:00\.000Z\s+-\s+-$/);
    await cli('schedule', 'pause', 'evening');
  });

  it('diffs two audits given by workflow id (the report artifacts `report <id>` reads), and says why a failed one has none', async function () {
    const last = async (id: string) => (await describeSchedule(client, id)).lastRun?.workflowId as string;
    const [clean, poisoned, failed] = await Promise.all(['sched-clean', 'sched-poisoned', 'sched-fail'].map(last));
    const text = (await cli('diff', clean, poisoned)).join('\n');
    expect(text).to.contain('airplane: flagged, non-disruptive (S_ND test)').and.contain('newly relabelled: 1');
    expect(text).to.contain('+0 added, -0 removed, 0 with another label, 4 in both');
    const json = JSON.parse((await cli('diff', poisoned, join(dir, 'store', 'report-sched-clean'), '--json')).join('\n')) as {
      verdictChanges: { name: string; verdict: string; kindBefore: string; kindAfter: string }[];
      restored: { id: string }[];
    };
    expect(json.verdictChanges.map((v) => [v.name, v.verdict, v.kindBefore, v.kindAfter])).to.deep.equal([
      ['airplane', 'unflagged', 'non-disruptive', 'clean'],
    ]);
    expect(json.restored.map((r) => r.id)).to.deep.equal(['airplane/a0']);
    const c = captureIo();
    expect(await main(['diff', failed, clean, '--address', server.address], c.io)).to.equal(2);
    expect(c.err.join('\n')).to.contain('cannot decode image').and.contain('DatasetError');
  });

  it('renders cron expressions back from the calendars the server keeps, and counts their times in a window', function () {
    const r = (start: number, end = start, step = 1) => ({ start, end, step });
    const spec = {
      calendars: [
        {
          second: [r(0)],
          minute: [r(0, 59, 15)],
          hour: [r(9, 17)],
          dayOfMonth: [r(1, 31)],
          month: [{ start: 'JANUARY' as const, end: 'DECEMBER' as const, step: 1 }],
          year: [],
          dayOfWeek: [{ start: 'MONDAY' as const, end: 'FRIDAY' as const, step: 1 }],
          comment: '',
        },
      ],
      intervals: [],
    };
    expect(cronOfSpec(spec)).to.deep.equal(['*/15 9-17 * * 1-5']);
    // 2024-01-05 is a Friday, 2024-01-06 a Saturday: 9 hours x 4 on the Friday only.
    expect(cronTimesIn(spec, new Date('2024-01-05T00:00:00Z'), new Date('2024-01-06T23:59:00Z'))).to.equal(36);
    expect(cronOfSpec({ intervals: [{ every: 3_600_000, offset: 0 }] })).to.deep.equal(['@every 3600s']);
  });
});
