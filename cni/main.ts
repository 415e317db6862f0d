// knet CNI plugin entry: the runtime execs this with CNI_* in the environment and the network
// config on stdin. `npm run build` compiles it with Bun into one executable, dist/cni/knet,
// which talks rtnetlink through libc (src/cni/bun-kernel.ts).
import { readFileSync, writeSync } from 'node:fs';
import { runCni } from '../src/cni/plugin.ts';
import { bunKernel } from '../src/cni/bun-kernel.ts';

// fd 0 read synchronously: the stream machinery behind process.stdin is not needed for one read.
function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';
  }
}

// fs.writeSync, not process.stdout: the first use of process.stdout costs ~9 ms under Bun.
function writeAll(fd: number, text: string): void {
  const bytes = Buffer.from(text);
  for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off);
}

// No top-level await: the build may emit CommonJS (bytecode needs it).
runCni(readStdin(), process.env, bunKernel()).then((out) => {
  writeAll(1, out.stdout);
  process.exitCode = out.exitCode;
}, (e: unknown) => {
  writeAll(1, JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: 'internal error', details: String(e) }) + '\n');
  process.exitCode = 1;
});
