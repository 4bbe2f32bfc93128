// Every stage's implementation, by name: the engine's registry (one line per stage).
import type { StageImpls } from '../engine.js';
import { attackStage } from './attack.js';
import { densityStage } from './density.js';
import { detectStage } from './detect.js';
import { encoderStage } from './encoder.js';
import { evaluateStage } from './evaluate.js';
import { featuresStage } from './features.js';
import { flowStage } from './flow.js';
import { ingestStage } from './ingest.js';
import { relabelStage } from './relabel.js';
import { reportStage } from './report.js';
import { retrainStage } from './retrain.js';

export const STAGE_IMPLS: StageImpls = {
  ingest: ingestStage,
  attack: attackStage,
  encoder: encoderStage,
  features: featuresStage,
  flow: flowStage,
  density: densityStage,
  detect: detectStage,
  relabel: relabelStage,
  retrain: retrainStage,
  evaluate: evaluateStage,
  report: reportStage,
};
