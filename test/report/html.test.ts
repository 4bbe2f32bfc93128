import { expect } from 'chai';
import { buildReportPage } from '../../report/page.js';
import { syntheticAudit } from './fixtures.js';

describe('report page', function () {
  it('is one offline file: charts as SVG, thumbnails as data URIs, no script, no external address', async function () {
    const a = syntheticAudit({ classes: 4, perClass: 40, className: (y) => (y === 2 ? 'cat <script>alert(1)</script>' : `class-${y}`) });
    const html = await buildReportPage(a);
    expect(html).to.match(/^<!doctype html>/);
    // No script element anywhere (a class name may hold "<script>" inside a quoted attribute value).
    expect(html.replace(/"[^"]*"/g, '""')).not.to.match(/<script/i);
    expect(html).to.include('cat &#60;script&#62;alert(1)&#60;/script&#62;');
    expect(html).not.to.match(/(src|href)="(?!data:)/);
    const figures = html.split('<figure class="chart"').slice(1);
    expect(figures.length).to.be.at.least(4 + 2 + 1 + 1); // histograms, the two tests, poison score, heatmap
    for (const f of figures) expect(f).to.include('<svg');
    const images = html.match(/<img [^>]*>/g) ?? [];
    expect(images.length).to.be.greaterThan(0);
    for (const img of images) expect(img).to.match(/src="data:image\/png;base64,[A-Za-z0-9+/=]+" alt="[^"]+"/);
    // The per-class table is real table markup with a header per row.
    expect(html).to.match(/<table class="classes"><caption>/);
    expect(html.match(/<tr class="[^"]*"><th scope="row">/g)).to.have.length(4);
  });

  it('says which test fired and by how much, and names near misses of a clean audit', async function () {
    const a = syntheticAudit({ classes: 4, perClass: 40 });
    const poisoned = await buildReportPage(a);
    const nd = a.report.classes[0].tests.nonDisruptive;
    expect(poisoned).to.include(`Poisoned: class-0`);
    expect(poisoned).to.include(`S_ND ${nd.statistic.toFixed(2)} below -2.5 by ${nd.margin.toFixed(2)}`);
    const classes = a.report.classes.map((k) => ({ ...k, flagged: false, kind: 'clean' as const }));
    const clean = await buildReportPage({
      ...a,
      report: {
        ...a.report,
        classes,
        targetClasses: [],
        nearMisses: [{ index: 1, name: 'class-1', test: 'non-disruptive', statistic: -2.27, threshold: -2.5 }],
      },
    });
    expect(clean).to.include('Clean, with near misses');
    expect(clean).to.include('class-1: non-disruptive statistic -2.27 against threshold -2.5 (did not fire)');
  });

  it("says which model chose the relabelled samples' new class, flows for reports from before the setting", async function () {
    const a = syntheticAudit({ classes: 4, perClass: 40 });
    const page = (relabel: object) =>
      buildReportPage({ ...a, report: { ...a.report, config: { ...a.report.config, relabel } as typeof a.report.config } });
    const byFlows = 'Relabelled samples go to the class whose flow gives them the highest density.';
    expect(await page(a.report.config.relabel)).to.include(byFlows);
    expect(await page({ alpha: 0.15, scoreReference: 'median-foreign' })).to.include(byFlows);
    const gaussian = await page({ ...a.report.config.relabel, model: 'shared-gaussian', pixelComponents: 0 });
    expect(gaussian).to.include('Relabelled samples go to the class whose mean is nearest in the features');
    expect(gaussian).not.to.include(byFlows);
    expect(gaussian).not.to.include('principal components of the images');
    expect(await page({ ...a.report.config.relabel, model: 'shared-gaussian', pixelComponents: 64 })).to.include(
      "Relabelled samples go to the class whose mean is nearest in the features and 64 principal components of the images' thumbnails",
    );
  });

  it('stays small for a 50,000-sample audit', async function () {
    this.timeout(60_000);
    const a = syntheticAudit({ classes: 10, perClass: 5000, imageSize: 32 });
    const html = await buildReportPage(a);
    // Aggregated charts and capped thumbnails: the size does not grow with the samples.
    expect(html.length).to.be.below(1_500_000);
    console.log(`      page for 50,000 samples: ${(html.length / 1024).toFixed(0)} KiB`);
  });
});
