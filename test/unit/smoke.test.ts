import test from 'ava';
import { randomNetnsName } from '../../src/kernel/netns.ts';

test('namespace names carry the prefix and a random suffix', (t) => {
  const a = randomNetnsName('knt-');
  t.regex(a, /^knt-[0-9a-f]{8}$/);
  t.not(a, randomNetnsName('knt-'));
});
