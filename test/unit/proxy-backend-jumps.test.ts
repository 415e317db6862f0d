import test from 'ava';
import { decideBackend } from '../../src/proxy/backend.ts';
import { JUMPS, isOwnedChain } from '../../src/proxy/jumps.ts';
import { isJumpLine, missingJumpsText } from '../../src/kernel/jumps.ts';
import { conntrackDeleteArgs } from '../../src/kernel/conntrack.ts';

const rules = (n: number) => Array.from({ length: n }, (_, i) => `-A INPUT -s 10.0.0.${i}/32 -j ACCEPT`).join('\n');

test('backend: kubelet hint chain wins, else more rules, nft on a tie', (t) => {
  t.is(decideBackend({ legacy: '', nft: '' }).backend, 'nft');
  t.is(decideBackend({ legacy: rules(12), nft: rules(3) }).backend, 'legacy');
  t.is(decideBackend({ legacy: rules(12), nft: `*mangle\n:KUBE-IPTABLES-HINT - [0:0]\n${rules(1)}` }).backend, 'nft');
  t.is(decideBackend({ legacy: ':KUBE-KUBELET-CANARY - [0:0]\n', nft: rules(50) }).backend, 'legacy');
});

test('backend: warns when both hold KUBE-* chains', (t) => {
  const d = decideBackend({ legacy: ':KUBE-SERVICES - [0:0]\n', nft: ':KUBE-SERVICES - [0:0]\n-A X\n' });
  t.is(d.backend, 'nft');
  t.regex(d.warning ?? '', /both/);
  t.is(decideBackend({ legacy: ':KUBE-SERVICES - [0:0]\n', nft: '' }).warning, undefined);
});

test('jumps: present ones (as iptables -S prints them) are not inserted again', (t) => {
  const listed = new Map<string, string[]>([
    ['nat/PREROUTING', ['-P PREROUTING ACCEPT', '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']],
    ['filter/INPUT', ['-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES']],
  ]);
  const text = missingJumpsText(JUMPS, listed);
  t.notRegex(text, /-I PREROUTING/);
  t.notRegex(text, /-I INPUT 1 .*KUBE-EXTERNAL-SERVICES/);
  t.regex(text, /^-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES$/m);
  t.regex(text, /^-I INPUT 1 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS$/m);
  t.is(text.split('\n').filter((l) => l.startsWith('-I')).length, JUMPS.length - 2);
  // A different target with the same comment is not the jump.
  t.false(isJumpLine('-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS-X', JUMPS[2]!));
  const all = new Map<string, string[]>();
  for (const j of JUMPS) all.set(`${j.table}/${j.from}`, [...(all.get(`${j.table}/${j.from}`) ?? []), `-A ${j.from} ${j.extra.join(' ')} -m comment --comment "${j.comment}" -j ${j.to}`.replace(/  +/g, ' ')]);
  t.is(missingJumpsText(JUMPS, all), '');
});

test('owned chains: service chains and the proxy\'s fixed chains, not kubelet\'s', (t) => {
  t.true(isOwnedChain('nat', 'KUBE-SEP-ABC'));
  t.true(isOwnedChain('filter', 'KUBE-PROXY-FIREWALL'));
  t.false(isOwnedChain('filter', 'KUBE-SEP-ABC'));
  t.false(isOwnedChain('filter', 'KUBE-FIREWALL'));
  t.false(isOwnedChain('nat', 'FLANNEL-POSTRTG'));
});

test('conntrack arguments are validated arrays', (t) => {
  t.deepEqual(conntrackDeleteArgs({ protocol: 'udp', origDst: '172.30.0.10', dstNat: '10.1.0.5' }), ['-D', '-p', 'udp', '--orig-dst', '172.30.0.10', '--dst-nat', '10.1.0.5']);
  t.deepEqual(conntrackDeleteArgs({ protocol: 'sctp', dport: 30080 }), ['-D', '-p', 'sctp', '--dport', '30080']);
  t.throws(() => conntrackDeleteArgs({ protocol: 'udp', origDst: '1.2.3.4; rm -rf /' }));
  t.throws(() => conntrackDeleteArgs({ protocol: 'udp', dport: 70000 }));
});
