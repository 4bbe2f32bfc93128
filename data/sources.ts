// A dataset source as a pipeline names it, and the one place that turns it into an ingest spec.
import { cifar10Root, resolveCifar10, type Cifar10Origin } from './cifar10.js';
import { datasetRoots, type DatasetRoot, type DatasetSpec } from './formats.js';

/** A dataset on disk: one of the ingest formats, or the shared CIFAR-10 copy (extracted on demand). */
export type DatasetSource = DatasetSpec | { format: 'cifar10'; split: 'train' | 'test' };

/** A resolved source: the ingest spec, and for `format: cifar10` which copy it reads (data/cifar10.ts). */
export interface ResolvedSource {
  spec: DatasetSpec;
  origin?: Cifar10Origin;
  /** For `format: cifar10`: one line naming the copy read (the ingest stage's figure ends with it). */
  description?: string;
}

export interface ResolveOptions {
  /** The ingest's limit: with only the bundled CIFAR-10 subset there, a larger one is refused. */
  limitPerClass?: number;
  /** Where CIFAR-10 archives are extracted (default <repo>/.cache). */
  cacheDir?: string;
}

/**
 * The ingest spec of a source, and for `format: cifar10` which copy it reads (its archive is
 * extracted on first use).
 */
export async function resolveSource(source: DatasetSource, opts: ResolveOptions = {}): Promise<ResolvedSource> {
  if (source.format !== 'cifar10') return { spec: source };
  return resolveCifar10(source.split, opts);
}

/**
 * The folders a source is read from (see datasetRoots), without extracting anything: for
 * `format: cifar10`, the split's folder where it is read (see cifar10Root).
 */
export function sourceRoots(source: DatasetSource): DatasetRoot[] {
  if (source.format !== 'cifar10') return datasetRoots(source);
  return [{ dir: cifar10Root(source.split), key: ['split'] }];
}
