import test from 'ava';
import { spawnSync } from 'node:child_process';

import { pidAlive } from '../../src/util/process.ts';

const killThrowing = (code: string) => () => {
  throw Object.assign(new Error(code), { code });
};

test('a live process is alive, one that exited is not', (t) => {
  t.true(pidAlive(process.pid));
  const exited = spawnSync('true');
  t.false(pidAlive(exited.pid!));
});

test('EPERM means the process exists under another user: alive; ESRCH: gone', (t) => {
  t.true(pidAlive(4242, killThrowing('EPERM')));
  t.false(pidAlive(4242, killThrowing('ESRCH')));
});

test('0, negative and non-integer ids name no process (kill would signal a group)', (t) => {
  const calls: number[] = [];
  const kill = (pid: number) => { calls.push(pid); };
  for (const pid of [0, -1, -process.pid, 1.5, Number.NaN, Infinity]) t.false(pidAlive(pid, kill), String(pid));
  t.deepEqual(calls, []);
});
