// Poisoned-dataset generators for evaluating the audit (see ../shared/docs/attacks.md).
// Label-consistent, ISSBA and Adap-* are not here: they need trained models (see README).
export { createAttack, poisonDataset, triggeredTestSet } from './poison.js';
export { loadTrigger } from './triggers.js';
