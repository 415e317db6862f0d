// Tiny entry for `knet proxy` alone (process-level tests run it with node --import tsx).
import { Command } from 'commander';
import { registerProxy } from './proxy.ts';

const program = new Command().name('knet');
registerProxy(program);
program.parseAsync(process.argv).then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`knet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
