// knet CNI plugin entry: the runtime execs this with CNI_* in the environment and the network
// config on stdin. Bundled on its own (dist/cni/knet) so a pod's ADD loads only the plugin.
import { runCni } from '../src/cni/plugin.ts';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    if (process.stdin.isTTY) return resolve('');
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

async function main(): Promise<void> {
  const stdin = await readStdin();
  const out = await runCni(stdin, process.env);
  if (out.stdout) process.stdout.write(out.stdout);
  process.exitCode = out.exitCode;
}

main().catch((e: unknown) => {
  process.stdout.write(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: 'internal error', details: String(e) }) + '\n');
  process.exitCode = 1;
});
