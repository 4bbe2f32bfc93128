// Defense registry: name -> defense. Adding a baseline is one file in this folder exporting a
// Defense<ItsConfig> and one line in `registry` below (plus its config section in AuditConfig).
import type { AuditConfig } from '../config.js';
import type { CleansedEntry } from '../audit-report.js';
import { checkCleansed } from '../cleansed.js';
import { activationClustering } from './activation-clustering.js';
import { flowRelabel } from './flow-relabel.js';
import { knnConsistency } from './knn-consistency.js';
import { noDefense } from './none.js';
import { spectralSignatures } from './spectral-signatures.js';
import type { Defense, DefenseInput } from './types.js';

export type { Defense, DefenseInput } from './types.js';

const registry = {
  'flow-relabel': flowRelabel,
  // Baselines (comparison rows, not the default), on the same features.
  'spectral-signatures': spectralSignatures,
  'activation-clustering': activationClustering,
  'knn-consistency': knnConsistency,
  // The undefended baseline (benchmarks' "no defense" row).
  none: noDefense,
} satisfies Record<string, Defense<unknown>>;

type Registry = typeof registry;
export type DefenseName = keyof Registry;
/** The config type of defense N (the union of all of them for DefenseName). */
export type DefenseConfig<N extends DefenseName = DefenseName> = Registry[N] extends Defense<infer C> ? C : never;

/** Registered defenses, in registration order (the paper's method first). */
export const DEFENSE_NAMES = Object.keys(registry) as DefenseName[];

export function isDefenseName(name: string): name is DefenseName {
  return Object.prototype.hasOwnProperty.call(registry, name);
}

/**
 * The defense registered as `name`; throws, listing the known names, for any other. Its split
 * checks the input's shapes before running and the output (ml/cleansed.ts `checkCleansed`)
 * after, so a defense that breaks the cleansed.jsonl contract fails at its source.
 */
export function createDefense<N extends DefenseName>(name: N): Defense<DefenseConfig<N>>;
export function createDefense(name: string): Defense<DefenseConfig>;
export function createDefense(name: string): Defense<DefenseConfig> {
  if (!isDefenseName(name)) throw new Error(`unknown defense ${JSON.stringify(name)}; known defenses: ${DEFENSE_NAMES.join(', ')}`);
  const d: Defense<DefenseConfig> = registry[name];
  return {
    name: d.name,
    description: d.description,
    configOf: (audit) => d.configOf(audit),
    split: (input, config): CleansedEntry[] => {
      checkDefenseInput(name, input);
      const out = d.split(input, config);
      checkCleansed(`defense ${name}`, out, input.ids, input.labels, input.classNames.length);
      return out;
    },
  };
}

/** Runs the defense the audit config selects (`audit.defense`) with its own config section. */
export function runDefense(audit: AuditConfig, input: DefenseInput): CleansedEntry[] {
  const d = createDefense(audit.defense);
  return d.split(input, d.configOf(audit));
}

/** Throws unless every per-sample array has N entries and the density matrix has C columns. */
function checkDefenseInput(name: string, input: DefenseInput): void {
  const { features, labels, classNames, ids, density, detections } = input;
  const n = labels.length;
  const c = classNames.length;
  if (ids.length !== n || features.rows !== n || density.rows !== n) {
    throw new Error(
      `defense ${name}: ${n} labels, ${ids.length} ids, ${features.rows} feature rows and ${density.rows} density rows must agree`,
    );
  }
  if (density.cols !== c) throw new Error(`defense ${name}: density matrix has ${density.cols} columns for ${c} classes`);
  for (const d of detections) {
    if (!(Number.isInteger(d.index) && d.index >= 0 && d.index < c)) {
      throw new Error(`defense ${name}: detection for class ${d.index}, outside 0..${c - 1}`);
    }
  }
}
