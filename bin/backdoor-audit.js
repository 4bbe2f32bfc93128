#!/usr/bin/env node
// Launcher: registers tsx so the TypeScript sources run as they are, then hands over to the CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../client/cli.ts');
const stop = new AbortController();
let interrupted = 0;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    // First signal: graceful shutdown (workers finish or cancel their current task); second: exit now.
    if (++interrupted > 1) process.exit(130);
    stop.abort();
  });
}
const code = await main(process.argv.slice(2), {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  signal: stop.signal,
});
process.exit(code);
