// Test namespaces: every kernel-touching test works only inside namespaces named knt-<random>,
// which this helper removes in teardown, whether the test passed or failed.
import type { ExecutionContext } from 'ava';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';

export const isRoot = process.getuid?.() === 0;

export async function testNetns(t: ExecutionContext, prefix = 'knt-'): Promise<string> {
  const name = randomNetnsName(prefix);
  t.teardown(() => deleteNetns(name));
  await addNetns(name);
  return name;
}
