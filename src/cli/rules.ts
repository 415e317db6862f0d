import type { Command } from 'commander';

export function registerRules(program: Command): void {
  program.command('rules').description('render kube-proxy iptables rules (work in progress)').action(() => {
    throw new Error('not yet implemented');
  });
}
