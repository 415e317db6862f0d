import test from 'ava';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSubnetEnv, previousSubnetFromEnv, readPreviousSubnet, writeSubnetEnv, assertSubnetFilePath } from '../../src/subnet/subnet-env.ts';
import { formatCidr, parseCidr } from '../../src/subnet/cidr.ts';

test('subnet.env matches flannel\'s documented example (facts A.9)', (t) => {
  const text = formatSubnetEnv({ network: parseCidr('10.5.0.0/16'), subnet: parseCidr('10.5.52.0/24'), mtu: 1450, ipMasq: false });
  t.is(text, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  t.is(formatCidr(previousSubnetFromEnv(text)!), '10.5.52.0/24');
  t.is(previousSubnetFromEnv('# nothing\n'), null);
  t.is(previousSubnetFromEnv('FLANNEL_SUBNET=garbage\n'), null);
});

test('written atomically into a fresh directory, read back; missing file means no previous subnet', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'knet-subnetenv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'run', 'flannel', 'subnet.env');
  t.is(await readPreviousSubnet(path), null);
  await writeSubnetEnv(path, { network: parseCidr('10.5.0.0/16'), subnet: parseCidr('10.5.9.0/24'), mtu: 1450, ipMasq: true });
  t.regex(readFileSync(path, 'utf8'), /FLANNEL_IPMASQ=true/);
  t.is(formatCidr((await readPreviousSubnet(path))!), '10.5.9.0/24');
  t.deepEqual(readdirSync(join(dir, 'run', 'flannel')), ['subnet.env']);
});

test('relative or odd subnet file paths are refused', (t) => {
  for (const p of ['subnet.env', '/run/flannel/', '/run/x\nFLANNEL_SUBNET=1']) t.throws(() => assertSubnetFilePath(p), { message: /invalid subnet file path/ });
});
