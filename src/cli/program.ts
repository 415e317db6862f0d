// The `knet` command tree, built without running anything: main.ts parses argv with it, and tests
// check deployment command lines against it.
import { Command } from 'commander';
import { registerRules } from './rules.ts';
import { registerAgent } from './agent.ts';
import { registerProxy } from './proxy.ts';
import { registerLab } from './lab.ts';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('knet')
    .description('Kubernetes node networking: CNI plugin, overlay agent, service proxy, rule inspection, labs')
    .version('0.1.0')
    // `knet lab kubectl ARGS` hands its options to kubectl (positional options, passed through).
    .enablePositionalOptions();
  registerRules(program);
  registerAgent(program);
  registerProxy(program);
  registerLab(program);
  return program;
}
