// Readers and facts several stages share: the dataset facts a dataset-writing stage reports,
// and the detections / cleansed manifest artifacts that later stages read.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetManifest } from '../../data/dataset.js';
import type { CleansedEntry } from '../../ml/audit-report.js';
import type { ClassDetection } from '../../ml/detect.js';
import type { StageInfo } from '../../workflows/types.js';
import { readJson } from '../io.js';

/** Detection statistics that may be NaN or infinite (kept through JSON by io.ts). */
const DETECTION_NUMBERS = ['sND', 'ownNLL', 'foreignRank', 'sNDNormalized', 'sD', 'valley'];

/** What the workflow needs to know of a dataset a stage wrote. */
export function datasetInfo(manifest: DatasetManifest, figure: string): StageInfo {
  return { figure, classes: manifest.classes, samples: manifest.size, datasetName: manifest.name, datasetHash: manifest.hash };
}

export const readDetections = (dir: string): Promise<ClassDetection[]> =>
  readJson<ClassDetection[]>(join(dir, 'detections.json'), DETECTION_NUMBERS);

export async function readCleansed(dir: string): Promise<CleansedEntry[]> {
  return (await readFile(join(dir, 'cleansed.jsonl'), 'utf8'))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as CleansedEntry);
}
