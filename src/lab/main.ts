// Stand-alone entry for `knet lab` (tests and benchmarks run it with `node --import tsx`
// before the main CLI registers the command), the same command src/cli/lab.ts defines.
import { Command } from 'commander';
import { registerLab } from '../cli/lab.ts';

const program = new Command().name('knet');
registerLab(program);
program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`knet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
