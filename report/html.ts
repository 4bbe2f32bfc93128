// report.html: one self-contained page (inline CSS, SVG charts, data-URI thumbnails, no script,
// no network) that shows an audit's verdict and the evidence for it.
import { relabelModelOf } from '../ml/config.js';
import type { AuditReport, ClassReport } from '../ml/audit-report.js';
import { NEAR_MISS_FRACTION } from '../ml/verdict.js';
import { densityHeatmapChart, foreignDensityChart, ndChart, poisonScoreChart, sdChart, type Chart } from './charts.js';
import { PAGE_LIMITS, type ClassThumbnails, type ReportFigures, type Thumbnail } from './figures.js';

export interface ReportPageInput {
  report: AuditReport;
  figures: ReportFigures;
  /** Data URI per sample index (report/thumbnails.ts). */
  thumbnails: ReadonlyMap<number, string>;
  /** What changed since the previous audit, as lines of text. */
  previous?: { title: string; lines: string[] };
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (x: number | undefined | null, digits = 3): string =>
  x === undefined || x === null ? '-' : Number.isFinite(x) ? x.toFixed(digits) : String(x);
const pct = (x: number | undefined): string => (x === undefined ? '-' : `${(100 * x).toFixed(1)}%`);

function figure(chart: Chart, caption: string): string {
  return `<figure class="chart" role="group" aria-label="${esc(caption)}">${chart.html}<figcaption>${esc(caption)}<span class="alt">${esc(chart.alt)}</span></figcaption></figure>`;
}

function verdictText(r: AuditReport): { status: 'poisoned' | 'clean' | 'near-miss'; headline: string; details: string[] } {
  const flagged = r.classes.filter((k) => k.flagged);
  const details = flagged.map((k) => {
    const fired = [
      k.tests.nonDisruptive.fired
        ? `non-disruptive test: S_ND ${num(k.tests.nonDisruptive.statistic, 2)} below ${k.tests.nonDisruptive.threshold} by ${num(k.tests.nonDisruptive.margin, 2)}`
        : '',
      k.tests.disruptive.fired
        ? `disruptive test: S_D ${num(k.tests.disruptive.statistic)} above ${k.tests.disruptive.threshold} by ${num(k.tests.disruptive.margin)}`
        : '',
    ].filter(Boolean);
    return `${k.name} (${k.kind}): ${fired.join('; ')}`;
  });
  const misses = r.nearMisses.map(
    (m) =>
      `${m.name}: ${m.test} statistic ${num(m.statistic, m.test === 'disruptive' ? 3 : 2)} against threshold ${m.threshold} (did not fire)`,
  );
  if (flagged.length)
    return {
      status: 'poisoned',
      headline: `Poisoned: ${flagged.map((k) => k.name).join(', ')}`,
      details: [...details, ...misses.map((m) => `near miss, ${m}`)],
    };
  if (misses.length) return { status: 'near-miss', headline: 'Clean, with near misses', details: misses };
  return { status: 'clean', headline: 'Clean: no class flagged', details: [] };
}

function banner(r: AuditReport): string {
  const v = verdictText(r);
  const enc = r.config.encoder;
  const lin = r.lineage;
  const encoder =
    enc.kind === 'simclr'
      ? `SimCLR ResNet-18 width ${enc.width}, ${enc.epochs} epochs` +
        (lin?.parentEncoder ? ` (${lin.cumulativeEpochs} in all, warm-started from ${lin.parentEncoder.slice(0, 12)})` : '')
      : enc.kind === 'reuse'
        ? `reused (${lin?.parentEncoder?.slice(0, 12) ?? enc.from}, no training)`
        : enc.kind === 'onnx'
          ? `ONNX (${enc.path}, ${enc.inputSize} px)`
          : `pretrained (${enc.path})`;
  const encoderKey = r.artifacts?.encoder ?? r.artifacts?.features;
  const runLink = r.run
    ? r.run.uiUrl
      ? `<a href="${esc(`${r.run.uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(r.run.namespace)}/workflows/${encodeURIComponent(r.run.workflowId)}`)}">${esc(r.run.workflowId)}</a>`
      : esc(r.run.workflowId)
    : 'in-process (no Temporal workflow)';
  const facts: [string, string][] = [
    ['dataset', `${r.dataset.name}, ${r.dataset.samples} samples, ${r.dataset.classes.length} classes`],
    ['dataset hash', `<code>${esc(r.dataset.hash.slice(0, 16))}</code>`],
    ['backend', esc(r.backend)],
    ...Object.entries(r.devices ?? {}).map(([stage, device]): [string, string] => [`${stage} ran on`, esc(device)]),
    ['encoder', `${esc(encoder)}${encoderKey ? ` <code>${esc(encoderKey.slice(0, 24))}</code>` : ''}`],
    ['defense', esc(r.config.defense)],
    ['workflow', runLink],
  ];
  return `<header class="verdict ${v.status}" role="banner">
<p class="status">${v.status === 'poisoned' ? '&#9888; ' : v.status === 'near-miss' ? '&#9888; ' : '&#10003; '}${esc(v.headline)}</p>
${v.details.length ? `<ul>${v.details.map((d) => `<li>${esc(d)}</li>`).join('')}</ul>` : ''}
<p>kept ${r.counts.kept}, relabelled ${r.counts.relabelled}, dropped ${r.counts.dropped}</p>
<dl>${facts.map(([k, val]) => `<dt>${esc(k)}</dt><dd>${k === 'dataset' ? esc(val) : val}</dd>`).join('')}</dl>
</header>`;
}

function evaluationSection(r: AuditReport): string {
  const e = r.evaluation;
  if (!e) return '';
  const rows: [string, string, string][] = [
    [
      'target found',
      e.targetDetected === undefined ? '-' : e.targetDetected ? 'yes' : 'no',
      'the flagged classes are exactly the attack target',
    ],
    ['TPR', pct(e.tpr), 'poisoned samples sent to the poisoned side (relabelled or removed)'],
    ['FPR', pct(e.fpr), 'genuine samples of flagged classes sent there'],
    ['relabel accuracy', pct(e.relabelAccuracy), 'relabelled poisoned samples given back their true class'],
    ['ACC', pct(e.acc), 'clean test accuracy after retraining'],
    ['ASR', pct(e.asr), 'triggered test images classified as the target after retraining'],
  ];
  return `<section><h2>Evaluation against ground truth</h2><table><thead><tr><th scope="col">measure</th><th scope="col">value</th><th scope="col">meaning</th></tr></thead><tbody>${rows
    .filter(([, v]) => v !== '-')
    .map(([k, v, m]) => `<tr><th scope="row">${esc(k)}</th><td class="num">${esc(v)}</td><td>${esc(m)}</td></tr>`)
    .join('')}</tbody></table></section>`;
}

function classTable(r: AuditReport): string {
  const truth = r.classes.some((k) => k.split.truth);
  const head = [
    'class',
    'samples',
    'S_ND (nats)',
    'foreign rank',
    'S_ND norm.',
    'ND margin',
    'S_D',
    'D margin',
    'valley mu',
    'verdict',
    'kept',
    'relab.',
    'dropped',
    ...(truth ? ['poisoned', 'poisoned kept', 'genuine dropped'] : []),
  ];
  const row = (k: ClassReport): string => {
    const t = k.tests;
    const verdict = k.flagged ? `flagged (${k.kind})` : t.nonDisruptive.nearMiss || t.disruptive.nearMiss ? 'near miss' : 'clean';
    const cells = [
      num(k.count, 0),
      num(k.sND, 2),
      num(k.foreignRank, 3),
      num(t.nonDisruptive.statistic, 2),
      num(t.nonDisruptive.margin, 2),
      num(t.disruptive.statistic, 3),
      num(t.disruptive.margin, 3),
      num(t.disruptive.valley, 1),
      verdict,
      num(k.split.kept, 0),
      num(k.split.relabelled, 0),
      num(k.split.dropped, 0),
      ...(truth ? [num(k.split.truth?.poisoned, 0), num(k.split.truth?.poisonedKept, 0), num(k.split.truth?.genuineDropped, 0)] : []),
    ];
    return `<tr class="${k.flagged ? 'flagged' : ''}"><th scope="row">${esc(k.name)}</th>${cells.map((c, i) => `<td class="${i === 7 ? '' : 'num'}">${esc(c)}</td>`).join('')}</tr>`;
  };
  const { betaND, betaD, ndNormalization } = r.config.detection;
  return `<section><h2>Per class</h2>
<p>The non-disruptive test fires when the normalised S_ND (${esc(ndNormalization)}) is below ${betaND}; the disruptive test when S_D, the fraction of the class below the valley mu of its foreign-density histogram, is above ${betaD}. A margin is how far past the threshold the statistic went (negative: how far short). A near miss went ${NEAR_MISS_FRACTION * 100}% of the way to its threshold without firing.</p>
<div class="scroll"><table class="classes"><caption>Detection statistics and the split of every class</caption><thead><tr>${head.map((h) => `<th scope="col">${esc(h)}</th>`).join('')}</tr></thead><tbody>${r.classes.map(row).join('')}</tbody></table></div></section>`;
}

function thumb(t: Thumbnail, uri: string | undefined, names: readonly string[]): string {
  const label = names[t.label] ?? String(t.label);
  const move = t.newLabel !== undefined ? `${label} &rarr; ${esc(names[t.newLabel] ?? String(t.newLabel))}` : esc(label);
  const truth = t.truth ? `<span class="truth ${t.truth}">${t.truth}</span>` : '';
  const alt = `${t.id}, labelled ${label}${t.newLabel !== undefined ? `, relabelled to ${names[t.newLabel] ?? t.newLabel}` : ''}, score ${num(t.score, 1)}${t.truth ? `, ${t.truth} in truth` : ''}`;
  return `<li>${uri ? `<img src="${uri}" alt="${esc(alt)}" width="64" height="64">` : ''}<span>${move}</span><span>s ${esc(num(t.score, 1))}</span>${truth}</li>`;
}

function flaggedSection(r: AuditReport, f: ReportFigures, uris: ReadonlyMap<number, string>): string {
  if (!f.poisonScore.length) return '';
  const names = r.dataset.classes;
  const parts = f.poisonScore.map((ps) => {
    const k = r.classes[ps.index];
    const t = k.split.truth;
    const cost =
      `${k.split.relabelled} relabelled, ${k.split.dropped} dropped, ${k.split.kept} kept of ${k.count}` +
      (t
        ? `; of its ${t.poisoned} poisoned samples ${t.poisonedKept} were kept with the attacker's label, and ${t.genuineDropped} genuine samples were dropped`
        : '') +
      '.';
    const thumbs: ClassThumbnails | undefined = f.thumbnails.find((x) => x.index === ps.index);
    const groups = (thumbs?.groups ?? [])
      .map(
        (g) =>
          `<h4>${esc(g.action)} (${g.shown.length}${g.of > g.shown.length ? ` of ${g.of}, lowest scores first` : ''})</h4><ul class="thumbs">${g.shown.map((t) => thumb(t, uris.get(t.index), names)).join('')}</ul>`,
      )
      .join('');
    return `<section class="flagged-class"><h3>${esc(ps.name)}</h3><p>${esc(cost)}</p>${figure(poisonScoreChart(ps), `Poison scores of ${ps.name} (paper Figure 4)`)}${groups}</section>`;
  });
  const capped = f.flaggedNotShown
    ? `<p class="capped">${f.flaggedNotShown} more flagged classes are not drawn (cap ${PAGE_LIMITS.flaggedClasses}); the table above lists them all.</p>`
    : '';
  return `<section><h2>Flagged classes: the split and the samples</h2>${parts.join('')}${capped}</section>`;
}

function heatmapSection(r: AuditReport, f: ReportFigures): string {
  const names = r.dataset.classes;
  const flows = f.relabelFlows.slice(0, 20);
  const capped =
    f.heatmap.of > f.heatmap.classes.length
      ? ` (${f.heatmap.classes.length} of ${f.heatmap.of} classes: flagged classes and relabelling destinations first)`
      : '';
  const relabelledBy =
    relabelModelOf(r.config.relabel) === 'flows'
      ? 'the class whose flow gives them the highest density'
      : r.config.relabel.pixelComponents
        ? `the class whose mean is nearest in the features and ${r.config.relabel.pixelComponents} principal components of the images' thumbnails, in the metric of a covariance shared by the classes (relabel.model shared-gaussian, relabel.pixelComponents)`
        : 'the class whose mean is nearest in the features, in the metric of a covariance shared by the classes (relabel.model shared-gaussian)';
  return `<section><h2>Where samples belong</h2><p>A column darker than the rest of its rows is a flow that explains other classes' samples well: the signature of a non-disruptive target, whose flow learnt the poisoned samples of every source class. Relabelled samples go to ${relabelledBy}.</p>${figure(densityHeatmapChart(f.heatmap, names), `Mean log-density of each class's samples under each class's flow${capped}`)}
${
  flows.length
    ? `<table><caption>Relabelled samples: old &rarr; new label${f.relabelFlows.length > flows.length ? ` (top ${flows.length} of ${f.relabelFlows.length})` : ''}</caption><thead><tr><th scope="col">from</th><th scope="col">to</th><th scope="col">samples</th></tr></thead><tbody>${flows
        .map(
          (x) =>
            `<tr><td>${esc(names[x.from] ?? String(x.from))}</td><td>${esc(names[x.to] ?? String(x.to))}</td><td class="num">${x.count}</td></tr>`,
        )
        .join('')}</tbody></table>`
    : '<p>No sample was relabelled.</p>'
}</section>`;
}

function stagesSection(r: AuditReport): string {
  const cached = new Set(r.cachedStages ?? []);
  // Stages in the order they first finished, a per-class stage's instances together by class.
  const base = (id: string) => id.replace(/\[\d+\]$/, '');
  const seen = [...new Set([...Object.keys(r.timings), ...cached])];
  const firstOf = new Map<string, number>();
  seen.forEach((id, i) => firstOf.set(base(id), Math.min(firstOf.get(base(id)) ?? i, i)));
  const classOf = (id: string) => Number(/\[(\d+)\]$/.exec(id)?.[1] ?? -1);
  const ids = seen.sort((a, b) => (firstOf.get(base(a)) as number) - (firstOf.get(base(b)) as number) || classOf(a) - classOf(b));
  if (!ids.length) return '';
  const total = Object.values(r.timings).reduce((a, b) => a + b, 0);
  return `<section><h2>Stages</h2><div class="scroll"><table><caption>Stages of this run: ${ids.length - cached.size} computed (${total.toFixed(1)} s of compute), ${cached.size} from the cache</caption><thead><tr><th scope="col">stage</th><th scope="col">computed or cached</th><th scope="col">seconds</th><th scope="col">artifact</th></tr></thead><tbody>${ids
    .map(
      (id) =>
        `<tr><th scope="row">${esc(id)}</th><td>${cached.has(id) ? 'cached' : 'computed'}</td><td class="num">${num(r.timings[id] ?? 0, 1)}</td><td><code>${esc((r.artifacts?.[id] ?? '').slice(0, 24))}</code></td></tr>`,
    )
    .join('')}</tbody></table></div></section>`;
}

const CSS = `
:root{color-scheme:light;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1f21;background:#fff}
body{max-width:1280px;margin:0 auto;padding:16px 24px 48px;line-height:1.4}
h1{font-size:1.4rem;margin:.2em 0}h2{font-size:1.15rem;margin-top:1.8em;border-bottom:1px solid #ddd}h3{font-size:1rem}h4{font-size:.9rem;margin:.8em 0 .3em}
.verdict{border:2px solid;border-radius:6px;padding:8px 16px;margin:12px 0}
.verdict .status{font-size:1.3rem;font-weight:700;margin:.3em 0}
.verdict.poisoned{border-color:#c0392b;background:#fdf0ee}.verdict.clean{border-color:#2e7d32;background:#eef7ee}.verdict.near-miss{border-color:#b7791f;background:#fdf6e7}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:.5em 0}dt{font-weight:600}dd{margin:0}
table{border-collapse:collapse;font-size:.8rem;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f4f6}tr.flagged th,tr.flagged td{background:#fdf0ee;font-weight:600}caption{text-align:left;font-weight:600;padding:4px 0}
.scroll{overflow-x:auto;max-height:640px;overflow-y:auto}
.chart{margin:8px 0}.chart figcaption{font-size:.85rem;color:#444}.alt{display:block;font-size:.8rem;color:#555;margin-top:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:8px}
.thumbs{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px}.thumbs li{display:flex;flex-direction:column;align-items:center;font-size:.7rem;width:92px;text-align:center}
.thumbs img{image-rendering:pixelated;border:1px solid #999}
.truth{border-radius:3px;padding:0 3px;font-weight:600}.truth.poisoned{background:#c0392b;color:#fff}.truth.cover{background:#e69f00}.truth.genuine{background:#dde6ee}
.capped{font-style:italic;color:#555}code{font-size:.85em}
`;

export function renderReportPage(input: ReportPageInput): string {
  const { report: r, figures: f, thumbnails: uris } = input;
  const fdCapped =
    f.foreignDensityOf > f.foreignDensity.length
      ? `<p class="capped">${f.foreignDensity.length} of ${f.foreignDensityOf} classes shown: flagged classes, near misses, then the highest S_D.</p>`
      : '';
  const previous = input.previous
    ? `<section><h2>${esc(input.previous.title)}</h2><ul>${input.previous.lines.map((l) => `<li>${esc(l)}</li>`).join('')}</ul></section>`
    : '';
  const warnings = r.warnings?.length
    ? `<section><h2>Warnings</h2><ul>${r.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul></section>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>backdoor-audit: ${esc(r.dataset.name)}</title><style>${CSS}</style></head>
<body><main>
<h1>Backdoor audit of ${esc(r.dataset.name)}</h1>
${banner(r)}
${evaluationSection(r)}
${previous}
${classTable(r)}
<section><h2>The two tests</h2>${figure(ndChart(r), 'Non-disruptive test: normalised S_ND per class')}${figure(sdChart(r), 'Disruptive test: S_D per class')}</section>
<section><h2>Foreign density per class (paper Figure 3)</h2><p>For each sample, the highest log-density any other class's flow gives it; a disruptive poison forms a separate mode at the left, cut off at the valley mu.</p>${fdCapped}<div class="grid">${f.foreignDensity
    .map((x) => figure(foreignDensityChart(x), `${x.name}${x.flagged ? ' (flagged)' : x.nearMiss ? ' (near miss)' : ''}`))
    .join('')}</div></section>
${flaggedSection(r, f, uris)}
${heatmapSection(r, f)}
${stagesSection(r)}
${warnings}
<footer><p class="capped">Page limits: ${PAGE_LIMITS.histogramClasses} foreign-density histograms, ${PAGE_LIMITS.flaggedClasses} flagged classes with thumbnails (${PAGE_LIMITS.thumbnails.poisoned} / ${PAGE_LIMITS.thumbnails.uncertain} / ${PAGE_LIMITS.thumbnails.clean} per side), ${PAGE_LIMITS.heatmapClasses} heatmap classes; report.json and cleansed.jsonl hold everything.</p></footer>
</main></body></html>
`;
}
