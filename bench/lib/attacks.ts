// The benchmarks' attack settings, from ../shared/docs/attacks.md's protocol: target class 0,
// 10% of the set poisoned; LC 2.5% of the set (25% of the target class); Adap-* 1% with 1%
// covers; SIG (not in attacks.md) 5% of the set (half the target class). One table, so the matrix and the detection-scale study poison alike.
import type { AttackConfig } from '../../attacks/types.js';

export type AttackSetting = Omit<AttackConfig, 'seed'>;

export const BENCH_ATTACKS: Record<string, AttackSetting> = {
  badnets: { name: 'badnets', targetClass: 0, rate: 0.1 },
  blend: { name: 'blend', targetClass: 0, rate: 0.1 },
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
