// report.html of a real audit (in-process, the same report stage as the workflow's) opened in
// headless Chromium: what a person sees must be there, offline, without errors.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditDataset } from '../../activities/in-process.js';
import { loadPipeline } from '../../client/pipeline.js';
import type { AuditReport } from '../../ml/audit-report.js';
import { checkReportPage, findChromium } from '../../scripts/chromium.js';
import { tinyImageFolder, writeTinyPipeline } from '../temporal-helpers.js';

describe('report.html in a real browser', function () {
  this.timeout(10 * 60_000);
  let chromium: string | undefined;
  let dir: string;

  before(async function () {
    chromium = findChromium();
    if (!chromium) {
      // The test setup's way to get it (npm run setup does the same); it may not be allowed here.
      try {
        execFileSync('bash', ['scripts/setup-chromium.sh'], { stdio: 'ignore', timeout: 5 * 60_000 });
      } catch {
        // reported by the skip below
      }
      chromium = findChromium();
    }
    if (!chromium) this.skip(); // no Chromium and `scripts/setup-chromium.sh` could not install one (needs root + apt-get)
    dir = await mkdtemp(join(tmpdir(), 'report-browser-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('opens offline with no console error, every chart drawn, every thumbnail decoded; writes a screenshot', async function () {
    const data = await tinyImageFolder(join(dir, 'data'), 4, 16);
    const output = join(dir, 'out');
    const file = await writeTinyPipeline(join(dir, 'audit.yaml'), { datasetRoot: data, datasetName: 'tiny-browser', output });
    await auditDataset(await loadPipeline(file), { store: join(dir, 'store') });
    const report = JSON.parse(await readFile(join(output, 'report.json'), 'utf8')) as AuditReport;
    const html = join(output, 'report.html');
    const shot = join(output, 'report.png');

    const page = await checkReportPage(chromium as string, html, shot);
    expect(page.consoleErrors).to.deep.equal([]);
    expect(page.externalRequests).to.deep.equal([]);
    expect(page.title).to.equal(`backdoor-audit: ${report.dataset.name}`);
    expect(page.classRows).to.equal(report.classes.length);
    // The two tests, one Figure-3 histogram per class (4 < cap), the heatmap, a Figure 4 per flagged class.
    expect(page.charts.length).to.equal(2 + report.classes.length + 1 + report.targetClasses.length);
    for (const c of page.charts) {
      expect(c.svg, c.label).to.equal(true);
      expect(c.width * c.height, c.label).to.be.greaterThan(0);
    }
    // Thumbnails exactly for the flagged classes (a clean audit shows none), all decoded at 64 px.
    const tags = ((await readFile(html, 'utf8')).match(/<img /g) ?? []).length;
    expect(page.images.length).to.equal(tags);
    expect(tags > 0).to.equal(report.targetClasses.length > 0);
    for (const img of page.images) expect(img, img.alt).to.deep.include({ decoded: true, naturalWidth: 64 });
    expect((await stat(shot)).size).to.be.greaterThan(10_000);
  });
});
