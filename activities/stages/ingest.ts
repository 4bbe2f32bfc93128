// Stage `ingest`: a dataset source on disk -> uint8 shards (data/ingest.ts). Its key includes
// the source's fingerprint, so edited files are never served from the cache.
import { join } from 'node:path';
import { datasetFingerprint } from '../../data/fingerprint.js';
import { ingest } from '../../data/ingest.js';
import { resolveSource } from '../../data/sources.js';
import type { StageImpl } from '../stage.js';
import { datasetInfo } from './common.js';

export const ingestStage: StageImpl<'ingest'> = {
  async identity({ fingerprint, ...params }) {
    return { params, external: fingerprint ?? (await datasetFingerprint(params.source)) };
  },
  async compute(run) {
    const p = run.params;
    // format: cifar10 says which copy it read (shared archive, bundled subset, binary archive).
    const source = await resolveSource(p.source, p.limitPerClass !== undefined ? { limitPerClass: p.limitPerClass } : {});
    const manifest = await ingest(source.spec, join(run.out, 'dataset'), {
      imageSize: p.imageSize,
      ...(p.name !== undefined ? { name: p.name } : {}),
      ...(p.limitPerClass !== undefined ? { limitPerClass: p.limitPerClass } : {}),
      onProgress: (done, total) => run.runtime.heartbeat({ done, total }),
      ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
    });
    return {
      info: datasetInfo(
        manifest,
        `${manifest.size} images, ${manifest.classes.length} classes, ${manifest.width}x${manifest.height}` +
          (source.description ? ` - ${source.description}` : ''),
      ),
    };
  },
};
