// Stand-alone entry for `knet agent` (tests run it with `node --import tsx`), the same command
// the main CLI registers.
import { Command } from 'commander';
import { registerAgent } from './agent.ts';

const program = new Command().name('knet');
registerAgent(program);
program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`knet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
