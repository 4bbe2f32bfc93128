// report.html from an audit's facts: the figures (aggregated), the thumbnails they name and the page.
import type { ImageSource, PoisonTruth } from '../data/types.js';
import type { AuditReport, CleansedEntry } from '../ml/audit-report.js';
import type { Matrix } from '../ml/matrix.js';
import { reportFigures } from './figures.js';
import { renderReportPage, type ReportPageInput } from './html.js';
import { thumbnails } from './thumbnails.js';

export interface ReportPageSource {
  report: AuditReport;
  /** The audited training set (its labels are the ones the report's split starts from). */
  source: ImageSource;
  /** log p_y(z_i), N x C. */
  density: Matrix;
  cleansed: readonly CleansedEntry[];
  truth?: PoisonTruth;
  previous?: ReportPageInput['previous'];
}

export async function buildReportPage(p: ReportPageSource): Promise<string> {
  const figures = reportFigures({
    report: p.report,
    density: p.density,
    labels: p.source.labels,
    ids: p.source.ids,
    cleansed: p.cleansed,
    ...(p.truth ? { truth: p.truth } : {}),
  });
  const wanted = figures.thumbnails.flatMap((c) => c.groups.flatMap((g) => g.shown.map((t) => t.index)));
  return renderReportPage({
    report: p.report,
    figures,
    thumbnails: await thumbnails(p.source, wanted),
    ...(p.previous ? { previous: p.previous } : {}),
  });
}
