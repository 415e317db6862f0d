// The kube-proxy conformance scenarios (copied from ../shared into test/fixtures/conformance),
// judged by their own runner against the built CLI.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

test('every kube-proxy conformance scenario matches byte for byte', async (t) => {
  t.true(existsSync('dist/knet.js'), 'run npm run build first');
  const out = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile('python3', ['test/fixtures/conformance/run.py', 'test/fixtures/conformance'], (err, stdout) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout });
    });
  });
  t.log(out.stdout.trim().split('\n').pop());
  t.is(out.code, 0, out.stdout);
  t.regex(out.stdout, /(\d+)\/\1 scenarios match/);
});
