// Bounded fuzz of what a runtime hands the plugin (stdin config and CNI_* environment) through
// runCni and the in-memory kernel: every input either succeeds or gets the spec's error JSON
// with a known code (never 999, an unexpected exception), and a failed call leaves no veth, no
// pod link, no address record, temp file or lock, no open namespace fd or socket.
// (test/integration/cni-fuzz.test.ts runs a smaller sample through the built executable.)
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni } from '../../src/cni/plugin.ts';
import { fakeCniKernel } from '../helpers/fake-cni-kernel.ts';
import { CNI_CODES, fuzzCall } from '../helpers/cni-fuzz.ts';

test('fuzzed config and environment: the spec\'s error JSON and code, nothing left behind', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'knt-c-fuzz-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const k = fakeCniKernel();
  const pod = k.kernel.netns('pod1');
  let failures = 0;
  let successes = 0;
  await fc.assert(fc.asyncProperty(fuzzCall(dir, '/run/netns/pod1'), async ({ stdin, env }) => {
    const out = await runCni(stdin, env, k);
    if (out.exitCode === 0) {
      successes++;
      // A valid ADD is undone so the next case starts from the same state.
      if (env.CNI_COMMAND === 'ADD') {
        const del = await runCni(stdin, { ...env, CNI_COMMAND: 'DEL' }, k);
        if (del.exitCode !== 0) throw new Error(`DEL after a fuzzed ADD failed: ${del.stdout}`);
      }
    } else {
      failures++;
      if (out.exitCode !== 1) throw new Error(`exit code ${out.exitCode}`);
      const err = JSON.parse(out.stdout);
      if (typeof err.cniVersion !== 'string' || typeof err.msg !== 'string') throw new Error(`not the spec's error shape: ${out.stdout}`);
      if (!CNI_CODES.includes(err.code)) throw new Error(`code ${err.code} for ${JSON.stringify({ stdin, env })}: ${out.stdout}`);
    }
    const podLinks = [...pod.links.values()].map((l) => l.name);
    if (podLinks.join() !== 'lo') throw new Error(`pod links left: ${podLinks} after ${JSON.stringify({ stdin, env })}: ${out.stdout}`);
    const veths = [...k.kernel.netns('node').links.values()].filter((l) => l.kind === 'veth');
    if (veths.length) throw new Error(`veths left on the node after ${JSON.stringify({ stdin, env })}: ${out.stdout}`);
    const left = listTree(dir).filter((f) => /(^|\/)(\d+\.\d+\.\d+\.\d+|\.knet-tmp-.*|.*\.lock)$/.test(f));
    if (left.length) throw new Error(`IPAM files left: ${left} after ${JSON.stringify({ stdin, env })}: ${out.stdout}`);
    if (k.openSockets() !== 0 || k.kernel.openFds() !== 0) throw new Error('a socket or namespace fd was left open');
  }), { numRuns: Number(process.env.KNET_FUZZ_RUNS ?? 400), seed: process.env.KNET_FUZZ_SEED ? Number(process.env.KNET_FUZZ_SEED) : undefined });
  t.log(`${failures} refused, ${successes} accepted`);
  t.true(failures > 100, 'most fuzzed inputs are bad ones');
  t.true(successes > 5, 'some are good, so the bad ones are compared with working calls');
});

function listTree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    out.push(prefix + e.name);
    if (e.isDirectory()) out.push(...listTree(join(dir, e.name), `${prefix}${e.name}/`));
  }
  return out;
}
