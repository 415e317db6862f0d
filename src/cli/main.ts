// knet: the single CLI entry. Each sub-command lives in its own module and is loaded lazily,
// so `knet rules` never pays for the Kubernetes client or etcd.
import { Command } from 'commander';
import { registerRules } from './rules.ts';
import { registerAgent } from './agent.ts';
import { registerProxy } from './proxy.ts';
import { registerLab } from './lab.ts';

const program = new Command();
program
  .name('knet')
  .description('Kubernetes node networking: CNI plugin, overlay agent, service proxy, rule inspection, labs')
  .version('0.1.0');

registerRules(program);
registerAgent(program);
registerProxy(program);
registerLab(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`knet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
