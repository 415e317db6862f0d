// The kube-proxy conformance scenarios (copied from ../shared into test/fixtures/conformance and
// test/fixtures/conformance-nftables), judged by their own runners against the built CLI.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

function runCorpus(dir: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile('python3', [`${dir}/run.py`, dir], (err, stdout) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout });
    });
  });
}

test('every kube-proxy iptables conformance scenario matches byte for byte', async (t) => {
  t.true(existsSync('dist/knet.js'), 'run npm run build first');
  const out = await runCorpus('test/fixtures/conformance');
  t.log(out.stdout.trim().split('\n').pop());
  t.is(out.code, 0, out.stdout);
  t.regex(out.stdout, /(\d+)\/\1 scenarios match/);
});

test('every kube-proxy nftables conformance scenario matches after kube-proxy\'s normalisation', async (t) => {
  t.true(existsSync('dist/knet.js'), 'run npm run build first');
  const out = await runCorpus('test/fixtures/conformance-nftables');
  t.log(out.stdout.trim().split('\n').pop());
  t.is(out.code, 0, out.stdout);
  t.regex(out.stdout, /(\d+)\/\1 nftables scenarios match/);
});
