// Parses a `knet ...` command line with the real commander program of src/cli (buildProgram,
// as main.ts uses it), without running the command: each action is replaced by
// one that records the parsed options. Unknown options, missing values, flag parsers that
// throw and stray arguments all throw, so deployment files can be checked against the CLI.
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/program.ts';

export interface ParsedCli {
  command: string;
  opts: Record<string, unknown>;
}

/** argv without the program name: ['agent', '--iface', 'eth0', ...]. */
export function parseKnetArgs(argv: readonly string[]): ParsedCli {
  const program = buildProgram();
  // Set on every command: sub-commands copy these settings only when they are created.
  for (const c of [program, ...program.commands]) c.exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} });
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
