// Small pieces the baseline defenses share: samples grouped by label, and the class and share
// wording of their reasons (the same as ml/relabel.ts's, so manifests read alike).

/** The sample indices of each class 0..classes-1, in input order. Throws on a label out of range. */
export function classMembers(who: string, labels: Int32Array, classes: number): number[][] {
  const members: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < classes)) throw new Error(`${who}: label ${y} of sample ${i} out of range 0..${classes - 1}`);
    members[y].push(i);
  }
  return members;
}

/** "bird (2)", or "class 2" without a name. */
export function className(classNames: readonly string[], y: number): string {
  return classNames[y] !== undefined ? `${classNames[y]} (${y})` : `class ${y}`;
}

/** 0.15 -> "15%", 0.1234 -> "12.34%". */
export function percent(fraction: number): string {
  return `${+(fraction * 100).toFixed(2)}%`;
}

/** Throws `<who> config: <key> must be <what>, got <value>` unless `ok`. */
export function requireConfig(ok: boolean, who: string, key: string, what: string, value: unknown): void {
  if (!ok) throw new Error(`${who} config: ${key} must be ${what}, got ${JSON.stringify(value)}`);
}
