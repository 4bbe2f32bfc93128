// A dataset source as a pipeline names it, and the one place that turns it into an ingest spec.
import { ensureCifar10 } from './cifar10.js';
import type { DatasetSpec } from './formats.js';

/** A dataset on disk: one of the ingest formats, or the shared CIFAR-10 copy (extracted on demand). */
export type DatasetSource = DatasetSpec | { format: 'cifar10'; split: 'train' | 'test' };

/** The ingest spec of a source; the shared CIFAR-10 copy is extracted on first use. */
export async function resolveSource(source: DatasetSource): Promise<DatasetSpec> {
  if (source.format !== 'cifar10') return source;
  const cifar = await ensureCifar10();
  return { format: 'imagefolder', root: source.split === 'train' ? cifar.train : cifar.test };
}
