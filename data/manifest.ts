// The rows of a manifest file: .csv with a header naming `path` and `label` columns, or .jsonl
// with one {"path", "label"} object per line; and how a label becomes a class index. Where the
// files are and whether they may be read is data/formats.ts's business.
import { CsvError, parse as parseCsv } from 'csv-parse/sync';
import { extname } from 'node:path';
import { DatasetError } from './dataset-error.js';

export interface ManifestRow {
  line: number;
  path: string;
  label: string | number;
}

/** The rows of manifest file `manifest` (its text given), by its extension; none is an error. */
export function manifestRows(manifest: string, text: string): ManifestRow[] {
  const ext = extname(manifest).toLowerCase();
  let rows: ManifestRow[];
  if (ext === '.csv') rows = parseCsvManifest(manifest, text);
  else if (ext === '.jsonl' || ext === '.ndjson') rows = parseJsonlManifest(manifest, text);
  else throw new DatasetError(manifest, 'manifest must be a .csv (header path,label) or a .jsonl file');
  if (rows.length === 0) throw new DatasetError(manifest, 'manifest lists no samples');
  return rows;
}

export function resolveLabel(manifest: string, where: string, label: string | number, classes: string[]): number {
  if (typeof label === 'string') {
    const byName = classes.indexOf(label);
    if (byName >= 0) return byName;
  }
  const index = typeof label === 'number' ? label : /^\d+$/.test(label) ? Number(label) : NaN;
  if (Number.isInteger(index) && index >= 0 && index < classes.length) return index;
  throw new DatasetError(manifest, `${where}: label ${JSON.stringify(label)} is not in the class list [${classes.join(', ')}]`);
}

/** Without an explicit class list: names sorted, or indices 0..max when every label is an index. */
export function inferClasses(manifest: string, rows: ManifestRow[]): string[] {
  const isIndex = (l: string | number): boolean => (typeof l === 'number' ? Number.isInteger(l) && l >= 0 : /^\d+$/.test(l));
  if (rows.every((r) => isIndex(r.label))) {
    const max = Math.max(...rows.map((r) => Number(r.label)));
    return Array.from({ length: max + 1 }, (_, i) => String(i));
  }
  const numeric = rows.find((r) => typeof r.label === 'number');
  if (numeric) {
    throw new DatasetError(manifest, `line ${numeric.line}: labels mix class names and indices; pass the class list explicitly`);
  }
  return [...new Set(rows.map((r) => String(r.label)))].sort();
}

function parseJsonlManifest(manifest: string, text: string): ManifestRow[] {
  const rows: ManifestRow[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '') continue;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (err) {
      throw new DatasetError(manifest, `line ${i + 1}: invalid JSON (${(err as Error).message})`);
    }
    const rec = obj as { path?: unknown; label?: unknown } | null;
    if (
      typeof rec !== 'object' ||
      rec === null ||
      typeof rec.path !== 'string' ||
      rec.path === '' ||
      (typeof rec.label !== 'string' && typeof rec.label !== 'number')
    ) {
      throw new DatasetError(manifest, `line ${i + 1}: expected {"path": string, "label": string | number}`);
    }
    rows.push({ line: i + 1, path: rec.path, label: rec.label });
  }
  return rows;
}

/**
 * CSV (RFC 4180, parsed by csv-parse): a header naming `path` and `label` (any case, any
 * order, other columns ignored), then one sample per record; blank lines are skipped.
 */
function parseCsvManifest(manifest: string, text: string): ManifestRow[] {
  try {
    return parseCsv<ManifestRow, Record<string, string | undefined>>(text, {
      bom: true,
      skip_empty_lines: true,
      relax_column_count: true, // a short record gets the "missing path or label" error below
      relax_quotes: true, // a quote inside an unquoted field is a plain character
      columns: (header) => {
        const names = header.map((f) => f.trim().toLowerCase());
        if (!names.includes('path') || !names.includes('label')) {
          throw new DatasetError(manifest, 'CSV manifest needs a header line with columns path and label');
        }
        return names;
      },
      on_record: (fields, { lines }) => {
        // `lines` is where the record ends; a quoted field may span lines, and errors name the first.
        const line = lines - (Object.values(fields).join('').match(/\n/g)?.length ?? 0);
        const { path, label } = fields;
        if (!path || !label) throw new DatasetError(manifest, `line ${line}: missing path or label`);
        return { line, path, label };
      },
    });
  } catch (err) {
    if (err instanceof CsvError) throw new DatasetError(manifest, `line ${String(err.lines)}: ${err.message}`);
    throw err;
  }
}
