// What is wrong with a pipeline file, said with the file, the line and the path inside it:
// PipelineError, duplicate YAML keys found in linear time, and the schema validator's errors
// turned into one message each (client/pipeline.ts parses and validates; this explains).
import type { ErrorObject } from 'ajv';
import { isMap, isNode, isPair, isScalar, isSeq, visit, type Document, type LineCounter } from 'yaml';
import { STAGES } from '../workflows/graph.js';

export interface PipelineProblem {
  /** Path inside the document, as `audit.flow.epochs`. */
  path: string;
  /** 1-based line (and column) of the offending node, when the document has one. */
  line?: number;
  column?: number;
  message: string;
}

export class PipelineError extends Error {
  readonly file: string;
  readonly problems: PipelineProblem[];
  constructor(file: string, problems: PipelineProblem[]) {
    const lines = problems.map((p) => `  ${file}${p.line ? `:${p.line}:${p.column ?? 1}` : ''}: ${p.path || '(top level)'}: ${p.message}`);
    super(`invalid pipeline ${file}:\n${lines.join('\n')}`);
    this.name = 'PipelineError';
    this.file = file;
    this.problems = problems;
  }
}

/** Problems of one kind reported at most (YAML errors, duplicate keys, schema violations): past that, their count. */
export const MAX_PROBLEMS_SHOWN = 20;

/**
 * Keys repeated within one mapping, in linear time (the yaml package's own uniqueKeys check
 * compares every key with every other: 40,000 keys took 22 s). Scalar keys compare by value,
 * as the yaml package does; other keys (mappings as keys) are never equal.
 */
export function duplicateKeys(doc: Document, lc: LineCounter): PipelineProblem[] {
  const out: PipelineProblem[] = [];
  let more = 0;
  visit(doc, {
    Map(_, map, ancestors) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        const key: unknown = pair.key.value;
        if (!seen.has(key)) {
          seen.add(key);
          continue;
        }
        if (out.length >= MAX_PROBLEMS_SHOWN) {
          more++;
          continue;
        }
        const pos = pair.key.range ? lc.linePos(pair.key.range[0]) : undefined;
        out.push({
          path: [...pathOf(ancestors, map), String(key)].join('.'),
          ...(pos ? { line: pos.line, column: pos.col } : {}),
          message: `YAML: map keys must be unique: "${String(key)}" appears again`,
        });
      }
    },
  });
  if (more) out.push({ path: '', message: `YAML: ${more} more duplicate key(s) not shown` });
  return out;
}

/** The document path (`audit.flow`) of `node`, from the ancestors visit() passes. */
function pathOf(ancestors: readonly unknown[], node: unknown): string[] {
  const chain = [...ancestors, node];
  const path: string[] = [];
  for (let i = 0; i < chain.length - 1; i++) {
    const here = chain[i];
    const next = chain[i + 1];
    if (isPair(here) && here.value === next) path.push(String(isScalar(here.key) ? here.key.value : here.key));
    else if (isSeq(here)) path.push(String(here.items.indexOf(next)));
  }
  return path;
}

export function describeErrors(errors: ErrorObject[], doc: Document, lc: LineCounter): PipelineProblem[] {
  const out: PipelineProblem[] = [];
  const seen = new Set<string>();
  // An if/then failure repeats the `then` branch's own errors; oneOf failures repeat their
  // branches' errors. Keep the specific ones; explain the rest once.
  const oneOfPaths = new Set(errors.filter((e) => e.keyword === 'oneOf').map((e) => e.instancePath));
  let more = 0;
  for (const e of errors) {
    if (e.keyword === 'if') continue;
    if (e.schemaPath.includes('/propertyNames/')) continue; // reported once as 'propertyNames'
    if (e.schemaPath.includes('/oneOf/') && oneOfPaths.has(e.instancePath)) continue; // explained by the oneOf message
    // Locating a node is linear in its mapping: tens of thousands of errors (a generated file) would take minutes.
    if (out.length >= MAX_PROBLEMS_SHOWN) {
      more++;
      continue;
    }
    const path = pointerToPath(e.instancePath);
    let target = path;
    let message: string;
    switch (e.keyword) {
      case 'required': {
        const key = (e.params as { missingProperty: string }).missingProperty;
        message = `missing required key "${key}"`;
        break;
      }
      case 'additionalProperties': {
        const key = (e.params as { additionalProperty: string }).additionalProperty;
        target = [...path, key];
        message = `unknown key "${key}"${suggestKeys(e)}`;
        break;
      }
      case 'propertyNames': {
        const name = (e.params as { propertyName: string }).propertyName;
        target = [...path, name];
        message = `unknown stage "${name}" (stages: ${STAGES.join(', ')})`;
        break;
      }
      case 'type':
        message = `expected ${(e.params as { type: string }).type}, got ${describeValue(doc.getIn(path))}`;
        break;
      case 'enum':
        message = `expected one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(doc.getIn(path))}`;
        break;
      case 'const':
        message = `expected ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
        break;
      case 'not':
        message = conflictMessage(e.schema, doc.getIn(path));
        break;
      case 'oneOf':
        message = e.schemaPath.includes('retrain')
          ? 'expected false or a mapping of retrain settings'
          : e.schemaPath.includes('duration')
            ? 'expected milliseconds or a duration such as 30s, 5m, 2h'
            : 'matches none of the allowed forms';
        break;
      default:
        message = `${e.message ?? e.keyword}`;
    }
    const id = `${target.join('.')}|${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const keyed = e.keyword === 'additionalProperties' || e.keyword === 'propertyNames';
    out.push({ path: target.join('.'), ...position(doc, lc, target, keyed), message });
  }
  if (more) out.push({ path: '', message: `${more} more problem(s) not shown` });
  return out;
}

function suggestKeys(e: ErrorObject): string {
  const schema = e.parentSchema as { properties?: Record<string, unknown> } | undefined;
  const keys = schema?.properties ? Object.keys(schema.properties) : [];
  return keys.length ? ` (allowed: ${keys.join(', ')})` : '';
}

/** For a `not: {anyOf: [{required: [k]}...]}` failure: which present keys the variant forbids. */
function conflictMessage(schema: unknown, node: unknown): string {
  const js = isNode(node) ? (node.toJSON() as Record<string, unknown>) : undefined;
  const forbidden = ((schema as { anyOf?: { required?: string[] }[] }).anyOf ?? []).flatMap((s) => s.required ?? []);
  const present = js && typeof js === 'object' ? forbidden.filter((k) => k in js) : [];
  const variant = js ? (js.format ?? js.kind ?? js.name) : undefined;
  const which =
    variant === undefined
      ? ''
      : ` with ${js && 'format' in js ? 'format' : js && 'kind' in js ? 'kind' : 'name'} ${JSON.stringify(variant)}`;
  return present.length
    ? `${present.map((k) => `"${k}"`).join(', ')} not allowed${which}`
    : `key combination not allowed${which} (see pipelines/schema.json)`;
}

function describeValue(node: unknown): string {
  const v = isNode(node) ? node.toJSON() : node;
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function pointerToPath(pointer: string): (string | number)[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** Line and column of the value at `path` (or of its key), else of its nearest existing ancestor's key. */
export function position(doc: Document, lc: LineCounter, path: (string | number)[], preferKey = false): { line?: number; column?: number } {
  const at = (node: unknown) => {
    if (!isNode(node) || !node.range) return undefined;
    const pos = lc.linePos(node.range[0]);
    return { line: pos.line, column: pos.col };
  };
  if (!preferKey && path.length) {
    const value = at(doc.getIn(path, true));
    if (value) return value;
  }
  for (let n = path.length; n >= 1; n--) {
    const parent: unknown = n === 1 ? doc.contents : doc.getIn(path.slice(0, n - 1), true);
    const last = path[n - 1];
    if (isMap(parent)) {
      const pair = parent.items.find((p) => isNode(p.key) && (p.key.toJSON() as unknown) === last);
      const found = pair ? at(pair.key) : undefined;
      if (found) return found;
    } else if (isSeq(parent) && typeof last === 'number') {
      const found = at(parent.items[last]);
      if (found) return found;
    }
  }
  return at(doc.contents) ?? {};
}
