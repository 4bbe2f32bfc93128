// Types of bin/dist.js (plain JavaScript: the launcher runs it before anything is compiled).
export declare const repoRoot: string;
export declare const STAMP_FILE: string;
export declare function buildInputs(root?: string): string[];
export declare function inputHashes(root?: string): Record<string, string>;
export type DistStatus = { fresh: true; build: string } | { fresh: false; reason: string };
export declare function distStatus(root?: string): DistStatus;
export interface CliEntry {
  /** Whether `path` is the compiled CLI in dist/ (else the TypeScript source, run through tsx). */
  compiled: boolean;
  path: string;
  /** Why the sources run instead of dist/, for stderr. */
  notice?: string;
}
export declare function cliEntry(root?: string, env?: NodeJS.ProcessEnv): CliEntry;
