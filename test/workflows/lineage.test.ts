// Encoder lineage through Temporal: the lineage stage is uncached, so the workflow runs it as an
// activity (no probe) every time; its key comes from the parent it finds, so a rerun with the
// same parent is a cache hit downstream. One server, the tiny dataset, SimCLR width 4.
import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, Connection } from '@temporalio/client';
import { parse, stringify } from 'yaml';
import { followAudit, startAudit } from '../../client/audit.js';
import { loadPipeline } from '../../client/pipeline.js';
import type { AuditReport } from '../../ml/audit-report.js';
import type { AuditProgress } from '../../workflows/types.js';
import { connectClient, InProcessWorkers, TestServer, tinyImageFolder, writeTinyPipeline } from '../temporal-helpers.js';

describe('encoder lineage on Temporal (warmStart: previous)', function () {
  this.timeout(300_000);
  let dir: string;
  let server: TestServer;
  let client: Client;
  let connection: Connection;
  let workers: InProcessWorkers | undefined;
  let datasetRoot: string;
  const savedState = process.env.BACKDOOR_AUDIT_STATE;
  const output = () => join(dir, 'out');

  /** Night `n`'s pipeline: the tiny one with a warm-started encoder, its own workflow id, one output folder. */
  async function night(n: number, epochs: number): Promise<string> {
    const file = join(dir, `night${n}.yaml`);
    await writeTinyPipeline(file, {
      datasetRoot,
      datasetName: 'tiny',
      output: output(),
      encoderEpochs: epochs,
      workflowId: `nightly-${n}`,
    });
    const doc = parse(await readFile(file, 'utf8')) as { audit: { encoder: Record<string, unknown> } };
    doc.audit.encoder.warmStart = 'previous';
    await writeFile(file, stringify(doc));
    return file;
  }
  async function run(file: string): Promise<{ states: Record<string, string>; report: AuditReport }> {
    const started = await startAudit(client, await loadPipeline(file));
    let progress: AuditProgress | undefined;
    await followAudit(started.handle, (p) => (progress = p ?? progress), 200);
    const states = Object.fromEntries((progress?.stages ?? []).map((s) => [s.id, s.state]));
    return { states, report: JSON.parse(await readFile(join(output(), 'report.json'), 'utf8')) as AuditReport };
  }

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'lineage-temporal-'));
    process.env.BACKDOOR_AUDIT_STATE = join(dir, 'state');
    datasetRoot = await tinyImageFolder(join(dir, 'data'), 3, 12);
    server = await TestServer.start(dir);
    ({ client, connection } = await connectClient(server.address));
    workers = await InProcessWorkers.start(server.address, join(dir, 'state', 'artifacts'), { client });
  });
  after(async function () {
    await workers?.stop();
    await connection?.close();
    await server?.stop();
    if (savedState === undefined) delete process.env.BACKDOOR_AUDIT_STATE;
    else process.env.BACKDOOR_AUDIT_STATE = savedState;
    await rm(dir, { recursive: true, force: true });
  });

  it('night 2 continues night 1; a rerun with the same parent takes the encoder and features from the cache', async () => {
    const first = await run(await night(1, 2));
    expect(first.states.lineage).to.equal('done');
    expect(first.report.lineage).to.include({ parentEncoder: null, cumulativeEpochs: 2 });
    const night1Report = await readFile(join(output(), 'report.json'), 'utf8');

    const second = await run(await night(2, 1));
    expect(second.states).to.include({ lineage: 'done', encoder: 'done' });
    expect(second.report.lineage).to.deep.equal({ parentEncoder: first.report.artifacts?.encoder, cumulativeEpochs: 3 });

    await writeFile(join(output(), 'report.json'), night1Report); // the same parent again
    const rerun = await run(await night(3, 1));
    expect(rerun.states).to.include({ lineage: 'done', encoder: 'cached', features: 'cached' });
    expect(rerun.report.artifacts?.encoder).to.equal(second.report.artifacts?.encoder);
    expect(rerun.report.artifacts?.lineage).to.equal(second.report.artifacts?.lineage);
  });
});
