// The userspace mode's portal rules (kube-proxy's KUBE-PORTALS-* chains), rendered purely and checked line by line;
// test/integration/userspace-e2e.test.ts loads them into a real kernel.
import test from 'ava';
import { renderPortals, portalCleanupText, PORTAL_JUMPS, type PortalPort } from '../../src/rules/portals.ts';
import { missingJumpsText } from '../../src/kernel/jumps.ts';

const web: PortalPort = { portName: 'default/web:http', protocol: 'tcp', clusterIP: '172.30.0.10', port: 80, nodePort: 30080, externalIPs: ['192.168.88.100'], loadBalancerIPs: ['192.168.88.200'], proxyPort: 40001 };
const dns: PortalPort = { portName: 'default/web:dns', protocol: 'udp', clusterIP: '172.30.0.10', port: 53, nodePort: 0, externalIPs: [], loadBalancerIPs: [], proxyPort: 40002 };

test('cluster, external and LB IPs: REDIRECT for pod traffic, DNAT to the node IP for host traffic; node ports likewise', (t) => {
  const r = renderPortals([web, dns], { hostIP: '192.168.77.2' });
  t.is(r.text, [
    '*nat',
    ':KUBE-PORTALS-CONTAINER - [0:0]', ':KUBE-PORTALS-HOST - [0:0]', ':KUBE-NODEPORT-CONTAINER - [0:0]', ':KUBE-NODEPORT-HOST - [0:0]',
    '-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:dns" -p udp -m udp --dport 53 -d 172.30.0.10/32 -j REDIRECT --to-ports 40002',
    '-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 172.30.0.10/32 -j REDIRECT --to-ports 40001',
    '-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 192.168.88.100/32 -j REDIRECT --to-ports 40001',
    '-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 192.168.88.200/32 -j REDIRECT --to-ports 40001',
    '-A KUBE-PORTALS-HOST -m comment --comment "default/web:dns" -p udp -m udp --dport 53 -d 172.30.0.10/32 -j DNAT --to-destination 192.168.77.2:40002',
    '-A KUBE-PORTALS-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 172.30.0.10/32 -j DNAT --to-destination 192.168.77.2:40001',
    '-A KUBE-PORTALS-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 192.168.88.100/32 -j DNAT --to-destination 192.168.77.2:40001',
    '-A KUBE-PORTALS-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 192.168.88.200/32 -j DNAT --to-destination 192.168.77.2:40001',
    '-A KUBE-NODEPORT-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 30080 -j REDIRECT --to-ports 40001',
    '-A KUBE-NODEPORT-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 30080 -j DNAT --to-destination 192.168.77.2:40001',
    'COMMIT',
    '*filter',
    ':KUBE-NODEPORT-NON-LOCAL - [0:0]',
    '-A KUBE-NODEPORT-NON-LOCAL -m comment --comment "default/web:dns" -p udp -m udp --dport 40002 -m conntrack --ctstate NEW -j ACCEPT',
    '-A KUBE-NODEPORT-NON-LOCAL -m comment --comment "default/web:http" -p tcp -m tcp --dport 40001 -m conntrack --ctstate NEW -j ACCEPT',
    'COMMIT', '',
  ].join('\n'));
  t.deepEqual(r.rulesWritten, { nat: 10, filter: 2 });
  t.deepEqual(r.warnings, []);
});

test('a second listener for outside traffic: node port, external and LB IPs go to it, the cluster IP does not; both ports are accepted', (t) => {
  const r = renderPortals([{ ...web, externalProxyPort: 40009 }], { hostIP: '192.168.77.2' });
  const to = (l: string) => l.match(/(?:--to-ports |192\.168\.77\.2:)(\d+)$/)?.[1];
  const nat = r.text.split('\n').filter((l) => l.startsWith('-A KUBE-PORTALS') || l.startsWith('-A KUBE-NODEPORT-'));
  t.deepEqual(nat.filter((l) => l.includes('172.30.0.10/32')).map(to), ['40001', '40001']);
  t.deepEqual(nat.filter((l) => /192\.168\.88\.\d+\/32|--dport 30080/.test(l)).map(to), ['40009', '40009', '40009', '40009', '40009', '40009']);
  t.deepEqual(r.text.split('\n').filter((l) => l.startsWith('-A KUBE-NODEPORT-NON-LOCAL')).map((l) => l.match(/--dport (\d+)/)?.[1]), ['40001', '40009']);
  const bad = renderPortals([{ ...web, externalProxyPort: 70000 }], { hostIP: null });
  t.is(bad.rulesWritten.nat, 0);
  t.regex(bad.warnings[0]!.message, /external proxy port 70000 is not a port/);
});

test('a specific listen address is DNATed to instead of REDIRECT; duplicate VIPs render once', (t) => {
  const r = renderPortals([{ ...web, externalIPs: ['172.30.0.10'], loadBalancerIPs: [], nodePort: 0 }], { hostIP: '192.168.77.2', listenIP: '10.9.0.1' });
  t.regex(r.text, /-d 172\.30\.0\.10\/32 -j DNAT --to-destination 10\.9\.0\.1:40001\n/);
  t.is(r.rulesWritten.nat, 2);
});

test('no node IP: no host rules, one warning; nothing at all: empty chains (a flush)', (t) => {
  const r = renderPortals([web], { hostIP: null });
  t.notRegex(r.text, /-A KUBE-(PORTALS|NODEPORT)-HOST/);
  t.is(r.warnings.length, 1);
  const empty = renderPortals([], { hostIP: '192.168.77.2' });
  t.deepEqual(empty.rulesWritten, { nat: 0, filter: 0 });
  t.regex(empty.text, /^:KUBE-PORTALS-CONTAINER - \[0:0\]$/m);
});

test('input is validated before it can reach iptables-restore', (t) => {
  const bad: Array<Partial<PortalPort>> = [
    { portName: 'x" -j ACCEPT' }, { clusterIP: '172.30.0.10 -j' }, { clusterIP: 'fd00::1' }, { externalIPs: ['1.2.3'] },
    { proxyPort: 0 }, { proxyPort: 70000 }, { nodePort: -1 }, { port: 1.5 }, { protocol: 'sctp' as 'tcp' },
  ];
  const other: PortalPort = { ...web, portName: 'ns/other:http', clusterIP: '172.30.0.99', proxyPort: 40003 };
  const good = renderPortals([other], { hostIP: '192.168.77.2' });
  for (const b of bad) {
    // The bad port is skipped with a warning; the other one renders exactly as it does alone.
    const r = renderPortals([{ ...web, ...b }, other], { hostIP: '192.168.77.2' });
    t.is(r.text, good.text, JSON.stringify(b));
    t.is(r.warnings.length, 1, JSON.stringify(b));
    t.regex(r.warnings[0]!.message, /^skipped: /);
  }
  t.throws(() => renderPortals([web], { hostIP: '192.168.77.2/24' }));
});

test('jumps: portal chains are inserted ahead of node-port chains, node ports only for local destinations', (t) => {
  const text = missingJumpsText(PORTAL_JUMPS, new Map());
  const pre = text.split('\n').filter((l) => l.startsWith('-I PREROUTING'));
  t.regex(pre[0]!, /-j KUBE-NODEPORT-CONTAINER$/);
  t.regex(pre[1]!, /-j KUBE-PORTALS-CONTAINER$/); // inserted last at position 1: runs first
  t.regex(pre[0]!, /-m addrtype --dst-type LOCAL/);
  t.regex(text, /\*filter\n-I INPUT 1 .*-j KUBE-NODEPORT-NON-LOCAL\nCOMMIT/);
});

test('cleanup text deletes only the chains present', (t) => {
  t.is(portalCleanupText({ nat: ['KUBE-PORTALS-HOST'], filter: [] }), '*nat\n:KUBE-PORTALS-HOST - [0:0]\n-X KUBE-PORTALS-HOST\nCOMMIT\n');
  t.is(portalCleanupText({ nat: [], filter: [] }), '');
});
