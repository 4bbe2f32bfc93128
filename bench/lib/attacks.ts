// The benchmarks' attack settings, from ../shared/docs/attacks.md's protocol: target class 0,
// 10% of the set poisoned; LC 2.5% of the set (25% of the target class); Adap-* 1% with 1%
// covers. Not in attacks.md: SIG, 5% of the set (half the target class); blend-noise, Blend's 10%
// at alpha 0.1 with a noise trigger, and blend-noise-faint at 0.05. One table, so the matrix and
// the detection-scale study poison alike.
import type { AttackConfig } from '../../attacks/types.js';

/** An attack's configuration without its seed (each run supplies one); per attack kind, so its own fields stay. */
export type AttackSetting = AttackConfig extends infer A ? (A extends AttackConfig ? Omit<A, 'seed'> : never) : never;

export const BENCH_ATTACKS: Record<string, AttackSetting> = {
  badnets: { name: 'badnets', targetClass: 0, rate: 0.1 },
  blend: { name: 'blend', targetClass: 0, rate: 0.1 },
  // The same blend with a uniform-noise trigger (Chen et al.'s random pattern) instead of Hello
  // Kitty: no shape or colour region for the encoder to see, only a faint texture.
  'blend-noise': { name: 'blend', targetClass: 0, rate: 0.1, trigger: 'noise', alpha: 0.1 },
  // Half as strong: how faint a trigger is still found (docs/results.md, "A faint noise trigger").
  'blend-noise-faint': { name: 'blend', targetClass: 0, rate: 0.1, trigger: 'noise', alpha: 0.05 },
  wanet: { name: 'wanet', targetClass: 0, rate: 0.1 },
  lc: { name: 'lc', targetClass: 0, rate: 0.025 },
  // Half the target class: a clean-label attack can only poison y_T's own samples.
  sig: { name: 'sig', targetClass: 0, rate: 0.05 },
  issba: { name: 'issba', targetClass: 0, rate: 0.1 },
  'adap-patch': { name: 'adap-patch', targetClass: 0, rate: 0.01, coverRate: 0.01 },
  'adap-blend': { name: 'adap-blend', targetClass: 0, rate: 0.01, coverRate: 0.01 },
};

/** The attack of a bench condition name, or undefined for 'clean'; an unknown name is an error naming the known ones. */
export function benchAttack(name: string, flag: string): AttackSetting | undefined {
  if (name === 'clean') return undefined;
  const a = BENCH_ATTACKS[name];
  if (!a) throw new Error(`${flag}: unknown condition "${name}" (clean, ${Object.keys(BENCH_ATTACKS).join(', ')})`);
  return a;
}
