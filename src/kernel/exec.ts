// The one way knet runs a program: execFile with an argument array (never a shell), optional
// stdin, and an error that carries the program's stderr.
import { execFile, type ExecFileOptions } from 'node:child_process';
import type { Writable } from 'node:stream';

export class ExecError extends Error {
  constructor(
    readonly file: string,
    readonly args: readonly string[],
    readonly code: number | string | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`${file} ${args.join(' ')} failed (${code}): ${stderr.trim() || stdout.trim()}`);
    this.name = 'ExecError';
  }
}

export interface RunOptions {
  /** stdin: all at once, or in pieces written one after another (a large input need never exist whole). */
  input?: string | Buffer | Iterable<string>;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Called with the program's pid as soon as it runs. */
  onSpawn?: (pid: number) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** The program's process id (nft monitor names the process behind each commit). */
  pid?: number;
}

export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // An input whose pieces fail to come (a throwing generator) must not end as a clean, short
    // stdin: the program is killed before its stdin closes and the run fails with that error.
    // (What it read before is its own: iptables-restore commits each table at its COMMIT.)
    let inputError: unknown;
    const o: ExecFileOptions = { maxBuffer: 512 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000, encoding: 'utf8' };
    if (opts.env) o.env = opts.env;
    const child = execFile(file, args as string[], o, (err, stdout, stderr) => {
      const out = String(stdout);
      const errText = String(stderr);
      if (inputError !== undefined) {
        reject(inputError);
      } else if (err) {
        const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        reject(new ExecError(file, args, code, out, errText));
      } else {
        resolve({ stdout: out, stderr: errText, ...(child.pid !== undefined ? { pid: child.pid } : {}) });
      }
    });
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    const input = opts.input;
    if (input !== undefined && child.stdin) {
      child.stdin.on('error', () => { /* the exit status reports the failure */ });
      if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
      else void feed(child.stdin, input, (e) => { inputError = e; child.kill('SIGKILL'); });
    }
  });
}

/**
 * Writes pieces with backpressure; stops when the reader went away (its exit status tells why).
 * When the pieces throw, `failed` runs (it kills the reader) before stdin is closed.
 */
async function feed(stdin: Writable, pieces: Iterable<string>, failed: (e: unknown) => void): Promise<void> {
  try {
    for (const piece of pieces) {
      if (stdin.destroyed) return;
      if (!stdin.write(piece)) {
        await new Promise<void>((resolve) => {
          const done = () => { stdin.off('drain', done); stdin.off('close', done); resolve(); };
          stdin.on('drain', done);
          stdin.on('close', done);
        });
      }
    }
  } catch (e) {
    failed(e);
    stdin.destroy();
    return;
  }
  if (!stdin.destroyed) stdin.end();
}
