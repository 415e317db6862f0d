import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SUBNET_FILE_MAX, readPreviousSubnet, writeSubnetEnv, assertSubnetFilePath } from '../../src/subnet/subnet-env.ts';
import { SubnetFileError, formatSubnetEnv, parseSubnetEnv, subnetFromEnv } from '../../src/subnet/subnet-env-text.ts';
import { formatCidr, parseCidr } from '../../src/subnet/cidr.ts';

test('subnet.env matches flannel\'s documented example', (t) => {
  const text = formatSubnetEnv({ network: parseCidr('10.5.0.0/16'), subnet: parseCidr('10.5.52.0/24'), mtu: 1450, ipMasq: false });
  t.is(text, 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  t.is(formatCidr(subnetFromEnv(text)!), '10.5.52.0/24');
  t.is(subnetFromEnv('# nothing\n'), null);
  t.is(subnetFromEnv('FLANNEL_SUBNET=garbage\n'), null);
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

test('the agent reads its previous subnet with the plugin\'s checks: no FIFO, no device, no huge file, nothing quoted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'knet-subnetenv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  t.throws(() => readPreviousSubnet(fifo), { instanceOf: SubnetFileError, message: /not a regular file/ });
  t.throws(() => readPreviousSubnet('/dev/zero'), { message: /under \/dev, a kernel file system/ });
  const big = join(dir, 'big');
  writeFileSync(big, `FLANNEL_SUBNET=10.5.9.1/24\n${'#'.repeat(SUBNET_FILE_MAX)}\n`);
  t.throws(() => readPreviousSubnet(big), { message: /at most 65536/ });
  // A damaged file holds no previous subnet, and its parse error names the line, not the text.
  const damaged = join(dir, 'damaged');
  writeFileSync(damaged, 'hunter2\n');
  t.is(readPreviousSubnet(damaged), null);
  t.throws(() => parseSubnetEnv('hunter2\n', damaged), { message: `${damaged}: line 1 is not KEY=VALUE (is it a subnet file?)` });
  t.throws(() => parseSubnetEnv('FLANNEL_SUBNET=10.5.9.1/31\n'), { message: /FLANNEL_SUBNET \(line 1\) is not an IPv4 CIDR with room for pods/ });
});
