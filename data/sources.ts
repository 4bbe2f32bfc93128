// A dataset source as a pipeline names it, and the one place that turns it into an ingest spec.
import { join } from 'node:path';
import { ensureCifar10 } from './cifar10.js';
import { datasetRoots, type DatasetRoot, type DatasetSpec } from './formats.js';
import { repoRoot } from './paths.js';

/** A dataset on disk: one of the ingest formats, or the shared CIFAR-10 copy (extracted on demand). */
export type DatasetSource = DatasetSpec | { format: 'cifar10'; split: 'train' | 'test' };

/** The ingest spec of a source; the shared CIFAR-10 copy is extracted on first use. */
export async function resolveSource(source: DatasetSource): Promise<DatasetSpec> {
  if (source.format !== 'cifar10') return source;
  const cifar = await ensureCifar10();
  return { format: 'imagefolder', root: source.split === 'train' ? cifar.train : cifar.test };
}

/**
 * The folders a source is read from (see datasetRoots), without extracting anything: for the
 * shared CIFAR-10 copy, the split's folder where ensureCifar10() extracts it by default.
 */
export function sourceRoots(source: DatasetSource): DatasetRoot[] {
  if (source.format !== 'cifar10') return datasetRoots(source);
  return [{ dir: join(repoRoot, '.cache', 'cifar10-jpg', source.split), key: ['split'] }];
}
