// Parses a `knet ...` command line with the real commander program of src/cli (the same
// register* functions main.ts uses), without running the command: each action is replaced by
// one that records the parsed options. Unknown options, missing values, flag parsers that
// throw and stray arguments all throw, so deployment files can be checked against the CLI.
import { Command } from 'commander';
import { registerAgent } from '../../src/cli/agent.ts';
import { registerProxy } from '../../src/cli/proxy.ts';
import { registerRules } from '../../src/cli/rules.ts';
import { registerLab } from '../../src/cli/lab.ts';

export interface ParsedCli {
  command: string;
  opts: Record<string, unknown>;
}

/** argv without the program name: ['agent', '--iface', 'eth0', ...]. */
export function parseKnetArgs(argv: readonly string[]): ParsedCli {
  const program = new Command();
  program.name('knet').exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
  registerRules(program);
  registerAgent(program);
  registerProxy(program);
  registerLab(program);
  let parsed: ParsedCli | undefined;
  for (const c of program.commands) {
    c.action((opts: Record<string, unknown>, cmd: Command) => {
      if (cmd.args.length > 0) throw new Error(`knet ${cmd.name()}: unexpected arguments ${JSON.stringify(cmd.args)}`);
      parsed = { command: cmd.name(), opts };
    });
  }
  program.parse([...argv], { from: 'user' });
  if (!parsed) throw new Error(`no knet sub-command ran for ${JSON.stringify(argv)}`);
  return parsed;
}
