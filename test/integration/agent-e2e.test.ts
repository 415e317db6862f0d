// End to end: node namespaces on an "underlay" bridge namespace that also runs etcd; one
// `knet agent` process per node; pods are namespaces on each node's cni0 bridge.
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';
import { ipBatch, ipJson } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { readOverlayState } from '../../src/kernel/overlay-state.ts';
import { iptablesSave } from '../../src/kernel/iptables.ts';
import { sleep, waitFor as waitUntil } from '../../src/util/wait.ts';

const rootTest = isRoot ? test : test.skip;
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const agentMain = join(repo, 'src', 'cli', 'agent-main.ts');
const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const HEALTHZ = 10260;

interface Agent { proc: ChildProcess; logs: () => string; stop: (signal?: NodeJS.Signals) => Promise<void> }
interface Node { ns: string; ip: string; subnetFile: string; agent: Agent | null; pod: string | null; podIP: string | null }
interface Cluster { underlay: string; etcd: EtcdServer; nodes: Node[] }

// Waits here default to 20 s, polling every 200 ms.
const waitFor = <T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000) => waitUntil(what, fn, timeoutMs, 200);

const inNs = (ns: string, file: string, args: string[], input?: string) => run('ip', ['netns', 'exec', ns, file, ...args], input === undefined ? {} : { input });

async function makeCluster(t: ExecutionContext, count: number, config: string | null = CONFIG): Promise<Cluster> {
  const underlay = await testNetns(t, 'knt-a');
  await ipBatch(underlay, ['link add br0 type bridge', 'addr add 192.168.50.254/24 dev br0', 'link set br0 up']);
  const etcd = await startEtcd(t, { netns: underlay, host: '192.168.50.254' });
  if (config) await etcd.put(`${PREFIX}/config`, config);
  const dir = mkdtempSync(join(tmpdir(), 'knet-agent-e2e-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nodes: Node[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = await testNetns(t, 'knt-a');
    const ip = `192.168.50.${i}`;
    await ipBatch(underlay, [`link add n${i} type veth peer name eth0 netns ${ns}`, `link set n${i} master br0 up`]);
    await ipBatch(ns, [`addr add ${ip}/24 dev eth0`, 'link set eth0 up']);
    await inNs(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    nodes.push({ ns, ip, subnetFile: join(dir, `node${i}`, 'subnet.env'), agent: null, pod: null, podIP: null });
  }
  return { underlay, etcd, nodes };
}

function startAgent(t: ExecutionContext, c: Cluster, n: Node, extra: string[] = []): Agent {
  const env: NodeJS.ProcessEnv = { ...process.env, KNET_LOG_LEVEL: 'info' };
  delete env.NODE_EXTRA_CA_CERTS; // makes every node start ~50 ms slower
  const proc = spawn('ip', ['netns', 'exec', n.ns, process.execPath, '--import', 'tsx', agentMain, 'agent',
    '--etcd-endpoints', c.etcd.endpoint, '--iface', 'eth0', '--subnet-file', n.subnetFile,
    '--healthz-port', String(HEALTHZ), '--metrics-port', String(HEALTHZ + 1), '--resync-period', '2', ...extra], { cwd: repo, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  t.teardown(() => stop('SIGKILL'));
  const agent = { proc, logs: () => log, stop };
  n.agent = agent;
  return agent;
}

function subnetEnv(n: Node): Map<string, string> {
  return new Map(readFileSync(n.subnetFile, 'utf8').trim().split('\n').map((l) => l.split('=') as [string, string]));
}

/** A pod: a namespace with a veth on the node's cni0 bridge, addressed from FLANNEL_SUBNET. */
async function addPod(t: ExecutionContext, n: Node): Promise<void> {
  await waitFor(`subnet file of ${n.ns}`, async () => existsSync(n.subnetFile));
  const env = subnetEnv(n);
  const gw = env.get('FLANNEL_SUBNET')!; // e.g. 10.5.7.1/24
  const mtu = env.get('FLANNEL_MTU')!;
  const [gwIP, len] = gw.split('/') as [string, string];
  const octets = gwIP.split('.');
  const podIP = [...octets.slice(0, 3), String(Number(octets[3]) + 1)].join('.');
  const pod = await testNetns(t, 'knt-a');
  await ipBatch(n.ns, ['link add cni0 type bridge', `addr add ${gw} dev cni0`, 'link set cni0 up',
    `link add vpod type veth peer name eth0 netns ${pod}`, 'link set vpod master cni0 up']);
  await ipBatch(pod, [`addr add ${podIP}/${len} dev eth0`, `link set eth0 mtu ${mtu} up`, `route add default via ${gwIP}`]);
  n.pod = pod;
  n.podIP = podIP;
}

// These machines have no ping binary; one ICMP echo over a raw socket does the same job.
const ICMP_ECHO = `
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident = os.getpid() & 0xffff
payload = b'knet-agent-test!' * 4
pkt = struct.pack('!BBHHH', 8, 0, 0, ident, 1) + payload
pkt = pkt[:2] + struct.pack('!H', csum(pkt)) + pkt[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(pkt, (sys.argv[1], 0))
end = time.time() + 1
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    ihl = (data[0] & 15) * 4
    t, _, _, i, _ = struct.unpack('!BBHHH', data[ihl:ihl + 8])
    if t == 0 and i == ident and addr[0] == sys.argv[1]:
        sys.exit(0)
sys.exit(1)
`;

async function ping(fromNs: string, ip: string): Promise<boolean> {
  try {
    await inNs(fromNs, 'python3', ['-c', ICMP_ECHO, ip]);
    return true;
  } catch {
    return false;
  }
}

async function tcpEcho(t: ExecutionContext, server: Node, client: Node): Promise<string> {
  const srv = spawn('ip', ['netns', 'exec', server.pod!, 'socat', 'TCP-LISTEN:8080,reuseaddr,fork', 'PIPE'], { stdio: 'ignore' });
  t.teardown(() => { srv.kill('SIGKILL'); });
  try {
    return await waitFor(`TCP ${client.podIP} -> ${server.podIP}`, async () => {
      const { stdout } = await run('ip', ['netns', 'exec', client.pod!, 'socat', '-T', '2', '-', `TCP:${server.podIP}:8080,connect-timeout=2`], { input: `hello from ${client.podIP}\n`, timeoutMs: 5000 });
      return stdout;
    }, 10_000);
  } finally {
    srv.kill('SIGKILL');
  }
}

async function healthz(n: Node): Promise<string> {
  try {
    const { stdout } = await inNs(n.ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${HEALTHZ}/healthz`]);
    return stdout;
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

/** On failure, what each node's agent said and what its kernel holds. */
async function dump(t: ExecutionContext, nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    t.log(`--- ${n.ip} agent log\n${n.agent?.logs().slice(-4000)}`);
    for (const args of [['route'], ['neigh'], ['-d', 'link', 'show', 'flannel.1']]) {
      t.log((await run('ip', ['-n', n.ns, ...args]).catch((e: Error) => ({ stdout: e.message }))).stdout);
    }
    t.log((await run('bridge', ['-n', n.ns, 'fdb', 'show', 'dev', 'flannel.1']).catch((e: Error) => ({ stdout: e.message }))).stdout);
  }
}

async function allPairsPing(t: ExecutionContext, nodes: Node[]): Promise<void> {
  try {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        await waitFor(`ping ${a.podIP} -> ${b.podIP}`, () => ping(a.pod!, b.podIP!), 15_000);
      }
    }
  } catch (err) {
    await dump(t, nodes);
    throw err;
  }
  t.pass('every pod pair pings');
}

const vtepMac = async (n: Node) => (await ipJson<{ address: string }>(n.ns, ['link', 'show', 'dev', 'flannel.1']))[0]!.address;

rootTest('three nodes: pods reach each other; restart, lease deletion, hand edits and masquerade', async (t) => {
  const c = await makeCluster(t, 3);
  const [a, b, cc] = c.nodes as [Node, Node, Node];
  for (const n of c.nodes) startAgent(t, c, n);
  for (const n of c.nodes) await addPod(t, n);
  const subnets = c.nodes.map((n) => subnetEnv(n).get('FLANNEL_SUBNET'));
  t.is(new Set(subnets).size, 3, 'three different subnets');
  t.is(subnetEnv(a).get('FLANNEL_MTU'), '1450');
  t.is(subnetEnv(a).get('FLANNEL_NETWORK'), '10.5.0.0/16');
  await allPairsPing(t, c.nodes);
  for (const [s, cl] of [[a, b], [b, cc], [cc, a]] as const) t.is(await tcpEcho(t, s, cl), `hello from ${cl.podIP}\n`);

  // Leases in flannel's exact shape.
  const leases = await c.etcd.list(`${PREFIX}/subnets/`);
  t.is(leases.length, 3);
  for (const l of leases) {
    t.regex(l.key, /^\/coreos\.com\/network\/subnets\/10\.5\.\d+\.0-24$/);
    t.not(l.lease, '0');
    const v = JSON.parse(l.value);
    t.deepEqual(Object.keys(v), ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
    t.deepEqual(Object.keys(v.BackendData), ['VNI', 'VtepMAC']);
  }

  // Masquerade: the underlay has no route to pods, so only a masqueraded ping comes back.
  t.true(await ping(a.pod!, '192.168.50.254'), 'pod reaches the underlay through masquerade');
  t.regex(await iptablesSave({ backend: 'nft', netns: a.ns }, 'nat'), /-A KNET-POSTRTG -m comment --comment "knet masq" -m mark --mark 0x4000\/0x4000 -j RETURN/);
  t.is(await healthz(a), '200');
  const { stdout: metrics } = await inNs(a.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ + 1}/metrics`]);
  t.regex(metrics, /knet_agent_peers_programmed 2/);
  t.regex(metrics, /knet_agent_lease_expiry_timestamp_seconds \d/);

  // Restart node A's agent: same subnet, same VTEP MAC, no entry lost.
  const before = { env: readFileSync(a.subnetFile, 'utf8'), mac: await vtepMac(a), state: await readOverlayState(a.ns, 'flannel.1') };
  await a.agent!.stop();
  const restarted = startAgent(t, c, a);
  await waitFor('restarted agent reconciles', async () => restarted.logs().includes('"how":"reused"') && (await healthz(a)) === '200');
  t.is(readFileSync(a.subnetFile, 'utf8'), before.env);
  t.is(await vtepMac(a), before.mac);
  const afterRestart = await readOverlayState(a.ns, 'flannel.1');
  if (JSON.stringify(afterRestart) !== JSON.stringify(before.state)) await dump(t, [a]);
  t.deepEqual(afterRestart, before.state);
  t.true(await ping(b.pod!, a.podIP!));

  // Hand-delete a route and an FDB entry on A: the next periodic reconcile restores them.
  const cSubnet = subnetEnv(cc).get('FLANNEL_SUBNET')!.replace(/\.1\/24$/, '.0/24');
  const cFdb = before.state.fdb.find((f) => f.dst === cc.ip)!;
  await ipBatch(a.ns, [`route del ${cSubnet}`]);
  await run('bridge', ['-n', a.ns, 'fdb', 'del', cFdb.mac, 'dev', 'flannel.1', 'dst', cc.ip, 'self']);
  await waitFor('route and FDB restored', async () => {
    const s = await readOverlayState(a.ns, 'flannel.1');
    return s.routes.some((r) => r.dst === cSubnet) && s.fdb.some((f) => f.dst === cc.ip);
  }, 10_000);
  t.true(await ping(a.pod!, cc.podIP!));

  // Someone deletes A's own lease while A runs: A puts the same subnet back.
  const aKey = leases.find((l) => JSON.parse(l.value).PublicIP === a.ip)!.key;
  await c.etcd.del(aKey);
  await waitFor('A re-creates its lease', async () => (await c.etcd.get(aKey)) !== null, 10_000);
  t.is(JSON.parse((await c.etcd.get(aKey))!).PublicIP, a.ip);

  // Node C goes away and its lease is deleted: A and B remove C's entries.
  await cc.agent!.stop('SIGKILL');
  const cKey = leases.find((l) => JSON.parse(l.value).PublicIP === cc.ip)!.key;
  await c.etcd.del(cKey);
  for (const n of [a, b]) {
    await waitFor(`${n.ip} drops node C`, async () => {
      const s = await readOverlayState(n.ns, 'flannel.1');
      return !s.routes.some((r) => r.dst === cSubnet) && !s.fdb.some((f) => f.dst === cc.ip) && s.neighbours.length === 1;
    }, 10_000);
  }
  t.true(await ping(a.pod!, b.podIP!), 'A and B still talk');
});

rootTest('config missing at start is retried; etcd stopped for 60 s: traffic flows, not ready, then the lease is renewed', async (t) => {
  const c = await makeCluster(t, 2, null);
  const [a, b] = c.nodes as [Node, Node];
  for (const n of c.nodes) startAgent(t, c, n);
  await waitFor('clear config error', async () => a.agent!.logs().includes('flannel config not found in etcd store'), 15_000);
  t.is(await healthz(a), '503');
  await c.etcd.put(`${PREFIX}/config`, '{"Network":"10.5.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}');
  for (const n of c.nodes) await addPod(t, n);
  t.regex(subnetEnv(a).get('FLANNEL_SUBNET')!, /\/26$/);
  await allPairsPing(t, c.nodes);
  await waitFor('ready', async () => (await healthz(a)) === '200' && (await healthz(b)) === '200');
  const leaseOf = async (n: Node) => (await c.etcd.list(`${PREFIX}/subnets/`)).find((l) => JSON.parse(l.value).PublicIP === n.ip)!;
  const before = await leaseOf(a);

  await c.etcd.stop();
  const started = Date.now();
  await waitFor('not ready while etcd is down', async () => (await healthz(a)) === '503', 15_000);
  let lost = 0;
  let sent = 0;
  while (Date.now() - started < 60_000) {
    sent += 2;
    if (!(await ping(a.pod!, b.podIP!))) lost++;
    if (!(await ping(b.pod!, a.podIP!))) lost++;
    await sleep(3000);
  }
  t.is(lost, 0, `${lost} of ${sent} pings lost while etcd was down`);
  t.is(await healthz(a), '503');
  await c.etcd.start();
  await waitFor('ready again', async () => (await healthz(a)) === '200', 20_000);
  const after = await waitFor('lease renewed', async () => {
    const l = await leaseOf(a);
    return l.lease !== before.lease ? l : null;
  });
  t.is(after.key, before.key, 'same subnet');
  t.true(a.agent!.logs().includes('renewed subnet lease'));
  t.true(await ping(a.pod!, b.podIP!));
});

rootTest('15.19: a node with net.ipv4.ip_forward=0 says so at start and on /readyz; turning it on makes it ready', async (t) => {
  const c = await makeCluster(t, 1);
  const [a] = c.nodes as [Node];
  await inNs(a.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  startAgent(t, c, a, ['--resync-period', '1']);
  await waitFor('the warning', async () => a.agent!.logs().includes('net.ipv4.ip_forward is 0'));
  await waitFor('subnet file', async () => existsSync(a.subnetFile));
  const { stdout } = await inNs(a.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ}/readyz`]);
  t.regex(stdout, /^not ready: net\.ipv4\.ip_forward is 0: this node drops traffic between its pods and other nodes/);
  await inNs(a.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await waitFor('ready', async () => (await healthz(a)) === '200', 15_000);
  t.pass();
});

rootTest('two agents racing for the last free subnet: one gets it, the other reports "out of subnets"', async (t) => {
  const c = await makeCluster(t, 2, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.7.0","Backend":{"Type":"vxlan"}}');
  for (const n of c.nodes) startAgent(t, c, n);
  const outcome = await waitFor('one winner and one clear loser', async () => {
    const won = c.nodes.filter((n) => existsSync(n.subnetFile));
    const lost = c.nodes.filter((n) => n.agent!.logs().includes('out of subnets: every /24 between 10.5.7.0 and 10.5.7.0 in 10.5.0.0/16 is leased or reserved'));
    return won.length === 1 && lost.length === 1 && won[0] !== lost[0] ? { won: won[0]!, lost: lost[0]! } : null;
  });
  const leases = await c.etcd.list(`${PREFIX}/subnets/`);
  t.deepEqual(leases.map((l) => l.key), [`${PREFIX}/subnets/10.5.7.0-24`]);
  t.is(JSON.parse(leases[0]!.value).PublicIP, outcome.won.ip);
  t.is(subnetEnv(outcome.won).get('FLANNEL_SUBNET'), '10.5.7.1/24');
  const { stdout } = await inNs(outcome.lost.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ}/healthz`]);
  t.regex(stdout, /not ready: acquire subnet lease: out of subnets/);
});
