// A synthetic audit for the report tests: a density matrix in which the poisoned samples of the
// target class sit closer to their source class's flow, run through the real detection, split
// and report code, and an in-memory image source whose pixels say which sample they are.
import type { ImageSource, PoisonTruth } from '../../data/types.js';
import { buildReport } from '../../ml/cleansed.js';
import { defaultAuditConfig } from '../../ml/config.js';
import type { AuditReport, CleansedEntry } from '../../ml/audit-report.js';
import { detectTargets } from '../../ml/detect.js';
import { matrix, type Matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { splitAndRelabel } from '../../ml/relabel.js';
import { poisonScores } from '../../ml/score.js';

export interface SyntheticAudit {
  report: AuditReport;
  density: Matrix;
  source: ImageSource;
  cleansed: CleansedEntry[];
  truth: PoisonTruth;
}

/** `perClass` samples in each of `classes` classes; 10% of the set poisoned into class 0. */
export function syntheticAudit(o: {
  classes: number;
  perClass: number;
  imageSize?: number;
  className?: (y: number) => string;
}): SyntheticAudit {
  const { classes, perClass } = o;
  const n = classes * perClass;
  const rng = new Rng(7);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = i % classes;
  const truth: PoisonTruth = { attack: 'synthetic', targetClass: 0, poisoned: [], sourceLabels: [] };
  for (let i = 0; i < n && truth.poisoned.length < Math.round(0.1 * n); i++) {
    if (labels[i] === 0) continue;
    truth.poisoned.push(i);
    truth.sourceLabels.push(labels[i]);
    labels[i] = 0;
  }
  const source = new Int32Array(labels);
  truth.poisoned.forEach((i, k) => (source[i] = truth.sourceLabels[k]));
  const density = matrix(n, classes);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < classes; y++) {
      // Foreign flows spread widely (no second mode), the own flow tightly.
      const value =
        y === source[i] ? (labels[i] === y ? -50 : -60) + 4 * (rng.next() - 0.5) : y === labels[i] ? -62 : -80 + 30 * (rng.next() - 0.5);
      density.data[i * classes + y] = value;
    }
  // Target flow fitted to a mixture: it explains other classes' samples better than a clean flow does.
  for (let i = 0; i < n; i++) if (labels[i] !== 0) density.data[i * classes] += 9;
  // The split below relabels with the flows' argmax (splitAndRelabel's default): the config says so.
  const config = {
    ...defaultAuditConfig,
    imageSize: o.imageSize ?? 8,
    relabel: { ...defaultAuditConfig.relabel, model: 'flows' as const },
  };
  const detections = detectTargets(density, labels, config.detection);
  const names = Array.from({ length: classes }, (_, y) => o.className?.(y) ?? `class-${y}`);
  const ids = Array.from({ length: n }, (_, i) => `img/${i}.png`);
  const cleansed = splitAndRelabel(ids, labels, density, poisonScores(density, labels), detections, config.relabel, names);
  const report = buildReport({
    dataset: { name: 'synthetic', hash: 'f'.repeat(64), samples: n, classes: names },
    backend: 'cpu',
    config,
    detections,
    cleansed,
    timings: { encoder: 12.5, 'flow[0]': 0.4 },
    truth,
    cachedStages: ['ingest'],
    artifacts: { ingest: 'ingest-aaaa', encoder: 'encoder-bbbb' },
  });
  const side = o.imageSize ?? 8;
  const image: ImageSource = {
    classes: names,
    height: side,
    width: side,
    size: n,
    labels,
    ids,
    async readImages(indices) {
      const out = new Uint8Array(indices.length * side * side * 3);
      for (let k = 0; k < indices.length; k++) out.fill(indices[k] % 256, k * side * side * 3, (k + 1) * side * side * 3);
      return out;
    },
  };
  return { report, density, source: image, cleansed, truth };
}
