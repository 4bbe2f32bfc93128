// Poisoned-dataset generators for evaluating the audit (see ../shared/docs/attacks.md).
// Label-consistent, ISSBA and Adap-* are not here: they need trained models (see README).
export type { Attack, AttackConfig, AttackName, BadnetsConfig, BlendConfig, WanetConfig } from './types.js';
export {
  createAttack,
  poisonDataset,
  triggeredTestSet,
  choosePoisoned,
  defaultCoverRate,
  PoisonedImages,
  TransformedImages,
} from './poison.js';
export { savePoisoned } from './save.js';
export { loadTrigger, sharedDataDir } from './triggers.js';
