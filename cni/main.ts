// knet CNI plugin entry: the runtime execs this with CNI_* in the environment and the network
// config on stdin. Bundled on its own (dist/cni/knet) so a pod's ADD loads only the plugin.
import { readFileSync } from 'node:fs';
import { runCni } from '../src/cni/plugin.ts';

// fd 0 read synchronously: process.stdin would load the stream and net machinery for nothing.
function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';
  }
}

async function main(): Promise<void> {
  const stdin = readStdin();
  const out = await runCni(stdin, process.env);
  if (out.stdout) process.stdout.write(out.stdout);
  process.exitCode = out.exitCode;
}

main().catch((e: unknown) => {
  process.stdout.write(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: 'internal error', details: String(e) }) + '\n');
  process.exitCode = 1;
});
