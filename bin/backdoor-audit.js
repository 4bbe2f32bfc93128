#!/usr/bin/env node
// Launcher: registers tsx so the TypeScript sources run as they are, then hands over to the CLI.
import { constants } from 'node:os';
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../client/cli.ts');
const stop = new AbortController();
let interrupted = 0;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    // First signal: the command says what it does and does it within seconds (`run` cancels or
    // detaches from its audit, a worker shuts down), told through the AbortSignal with the
    // signal's name as reason. Second: exit now, with the shell's code for the signal (130, 143).
    if (++interrupted > 1) process.exit(128 + constants.signals[sig]);
    stop.abort(sig);
  });
}
const code = await main(process.argv.slice(2), {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  signal: stop.signal,
});
process.exit(code);
