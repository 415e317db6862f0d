// The root guard (test/helpers/root-guard.ts, loaded into every worker): kernel writes outside a
// namespace are refused before they run; reads and anything inside a namespace pass.
import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { rootWrite } from '../helpers/root-guard.ts';

test('kernel writes in the machine\'s own namespace are refused; reads and namespaced commands pass', async (t) => {
  t.throws(() => spawnSync('iptables-restore', ['--noflush']), { message: /root-guard: refused iptables-restore --noflush/ });
  await t.throwsAsync(() => promisify(execFile)('ip', ['link', 'add', 'knt-x', 'type', 'dummy']), { message: /root-guard: refused ip link add/ });
  for (const [file, args] of [
    ['iptables-nft-restore', []], ['iptables', ['-t', 'nat', '-A', 'X']], ['nft', ['-f', '-']], ['nft', ['add', 'table', 'ip', 'x']], ['ip', ['-batch', '-']],
    ['ip', ['route', 'replace', '10.0.0.0/8', 'dev', 'lo']], ['conntrack', ['-D', '-p', 'udp']], ['sysctl', ['-qw', 'net.ipv4.ip_forward=1']], ['ip', ['netns', 'attach', 'x', '1']],
    ['ip', ['link', 'add', 'a', 'netns', 'knt-a', 'type', 'veth', 'peer', 'name', 'b']], ['bridge', ['fdb', 'add', '0a:00:00:00:00:01', 'dev', 'x']], ['ethtool', ['-K', 'eth0', 'tx', 'off']],
  ] as const) t.truthy(rootWrite(file, args), `${file} ${args.join(' ')}`);
  for (const [file, args] of [
    ['ip', ['netns', 'exec', 'knt-a', 'iptables-restore']], ['ip', ['-n', 'knt-a', 'link', 'add', 'x', 'type', 'dummy']], ['ip', ['netns', 'add', 'knt-a']],
    ['ip', ['-j', 'addr', 'show']], ['iptables-nft-save', []], ['iptables', ['-t', 'nat', '-S']], ['nft', ['list', 'ruleset']], ['nft', ['-c', '-f', 'x.nft']], ['conntrack', ['-L']],
    ['ip', ['link', 'add', 'a', 'netns', 'knt-a', 'type', 'veth', 'peer', 'name', 'b', 'netns', 'knt-b']], ['bridge', ['-n', 'knt-a', '-j', 'fdb', 'show']], ['bridge', ['fdb', 'show']],
  ] as const) t.is(rootWrite(file, args), null, `${file} ${args.join(' ')}`);
});
