// Configurations small enough for the CPU test budget; the paper's numbers stay the defaults.
import { defaultAuditConfig, type AuditConfig } from '../ml/config.js';

export const tinyAuditConfig: AuditConfig = {
  ...defaultAuditConfig,
  seed: 7,
  backend: 'auto',
  encoder: { kind: 'simclr', width: 4, stem: 'cifar', epochs: 1, batchSize: 64, lr: 3e-4, temperature: 0.5, projectionDim: 32 },
  flow: { epochs: 3, batchSize: 16, lr: 1e-3, hidden: 32 },
  retrain: { width: 4, epochs: 1, batchSize: 64, lr: 0.1, momentum: 0.9, weightDecay: 5e-4, milestones: [] },
};
