// Poisoned-dataset generators for evaluating the audit (see ../shared/docs/attacks.md): BadNets,
// Blend, WaNet, LC, ISSBA, Adap-Patch and Adap-Blend behind one registry.
export { createAttack, isCleanLabel, poisonDataset, triggeredTestSet } from './poison.js';
export { loadTrigger } from './triggers.js';
export { writePreview } from './preview.js';
export type { Attack, AttackConfig, AttackContext, AttackName } from './types.js';
