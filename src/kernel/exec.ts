// The one way knet runs a program: execFile with an argument array (never a shell), optional
// stdin, and an error that carries the program's stderr.
import { execFile, type ExecFileOptions } from 'node:child_process';

export class ExecError extends Error {
  constructor(
    readonly file: string,
    readonly args: readonly string[],
    readonly code: number | string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`${file} ${args.join(' ')} failed (${code}): ${stderr.trim() || stdout.trim()}`);
  }
}

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const o: ExecFileOptions = { maxBuffer: 512 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000, encoding: 'utf8' };
    if (opts.env) o.env = opts.env;
    const child = execFile(file, args as string[], o, (err, stdout, stderr) => {
      const out = String(stdout);
      const errText = String(stderr);
      if (err) {
        const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        reject(new ExecError(file, args, code, out, errText));
      } else {
        resolve({ stdout: out, stderr: errText });
      }
    });
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => { /* the exit status reports the failure */ });
      child.stdin?.end(opts.input);
    }
  });
}
