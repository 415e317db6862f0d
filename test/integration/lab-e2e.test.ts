// knet lab end to end, as a user runs it: `lab up` (3 nodes: etcd, lab API, a knet agent and a
// knet proxy per node as separate processes, pods through the built CNI plugin), `up` again,
// `check` (real TCP/UDP traffic), `status`, `exec`, `apply` (scale a service, add one),
// `check` again, `delete`, `down`; then nothing may be left: no namespace, process, file, and
// nothing changed in the machine's own namespace. Also: a failed `up` and a Ctrl-C during `up`
// remove what they made. The first lab runs the etcd subnet manager; the userspace, nftables
// and ovs-gre labs the default kube subnet manager (flannel's Node annotations, podCIDRs from
// the lab API). Namespaces are named knt-l<random>-*.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { isRoot } from '../helpers/netns.ts';
import { pidRunning } from '../helpers/process.ts';
import { run } from '../../src/kernel/exec.ts';
import { deleteNetns, listNetns } from '../../src/kernel/netns.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { Node } from '../../src/model/k8s.ts';
import { readSubnetFile } from '../../src/subnet/subnet-env.ts';
import { subnetFromEnv } from '../../src/subnet/subnet-env-text.ts';
import { formatCidr } from '../../src/subnet/cidr.ts';
import { nftListTable } from '../../src/kernel/nft.ts';
import { iptablesSave } from '../../src/kernel/iptables.ts';

const rootTest = isRoot ? test.serial : test.skip;
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const main = join(repo, 'src', 'lab', 'main.ts');
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;

interface Out { code: number | null; stdout: string; stderr: string }

function lab(args: string[], o: { onStderr?: (text: string, kill: (s: NodeJS.Signals) => void) => void } = {}): Promise<Out> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', main, 'lab', ...args], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); o.onStderr?.(stderr, (s) => p.kill(s)); });
    p.once('error', reject);
    // The last of stdout may arrive after the exit; daemons `lab up` starts may hold the pipe open,
    // so 'close' could wait for them: the end of stdout, or a second at most.
    p.once('exit', (code) => {
      const done = () => resolve({ code, stdout, stderr });
      if (p.stdout.readableEnded) { done(); return; }
      const timer = setTimeout(done, 1000);
      p.stdout.once('end', () => { clearTimeout(timer); done(); });
    });
  });
}

/** `letter`: the namespace prefix's letter (each test suite's own; nftables tests use n). */
function newLab(t: ExecutionContext, letter = 'l'): { dir: string; prefix: string } {
  const base = mkdtempSync(join(tmpdir(), 'knt-lab-'));
  const dir = join(base, 'lab');
  const prefix = `knt-${letter}${randomBytes(3).toString('hex')}-`;
  // Whatever happens, nothing of this lab survives the test.
  t.teardown(async () => {
    if (existsSync(join(dir, 'state.json'))) await lab(['down', '--dir', dir]);
    for (const ns of (await listNetns()).filter((n) => n.startsWith(prefix))) await deleteNetns(ns);
    rmSync(base, { recursive: true, force: true });
  });
  return { dir, prefix };
}

/** The machine's own network: links, addresses, routes, rules (counters dropped). */
async function rootNetwork(): Promise<string> {
  const save = (file: string) => run(file, []).catch(() => ({ stdout: '' }));
  const parts = await Promise.all([
    run('ip', ['-br', 'link']), run('ip', ['-br', 'addr']), run('ip', ['route', 'show', 'table', 'all']),
    save('iptables-nft-save'), save('iptables-legacy-save'),
  ]);
  return parts.map((p) => p.stdout.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '')).join('\n')).join('\n--\n');
}

async function assertNothingLeft(t: ExecutionContext, dir: string, prefix: string, pids: number[]): Promise<void> {
  t.deepEqual((await listNetns()).filter((n) => n.startsWith(prefix)), [], 'no lab namespace is left');
  t.deepEqual(pids.filter(pidRunning), [], 'no lab process is left');
  t.false(existsSync(join(dir, 'state.json')), 'the state file is gone');
}

interface CheckRow { id: string; check: string; pass: boolean; detail: string }

async function check(t: ExecutionContext, dir: string): Promise<CheckRow[]> {
  const r = await lab(['check', '--dir', dir, '--json', '--wait', '30']);
  const rows = JSON.parse(r.stdout) as CheckRow[];
  const failed = rows.filter((x) => !x.pass);
  t.deepEqual(failed, [], `lab check failed:\n${r.stderr}`);
  t.is(r.code, 0);
  return rows;
}

rootTest('lab up, check, status, exec, apply (scale + new service), check, delete, down: nothing left', async (t) => {
  const { dir, prefix } = newLab(t);
  const before = await rootNetwork();

  const up = await lab(['up', '--nodes', '3', '--dir', dir, '--ns-prefix', prefix, '--subnet-manager', 'etcd']);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stderr, /etcd subnet manager/);
  for (const step of ['namespaces', 'etcd', 'lab API', 'start agents', 'start proxies', 'leases', 'node objects', 'proxy sync', 'pods', 'services']) t.regex(up.stderr, new RegExp(`  ${step}: \\d+\\.\\d+s`));
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
  t.is(state.phase, 'up');
  t.deepEqual(state.processes.map((p) => p.what).sort(), ['agent-node-1', 'agent-node-2', 'agent-node-3', 'etcd', 'flannel-etcd', 'lab-api', 'outside-echo', 'proxy-node-1', 'proxy-node-2', 'proxy-node-3']);
  t.true(state.namespaces.every((n) => n.startsWith(prefix)));
  const pids = state.processes.map((p) => p.pid);

  // The agents and proxies are separate processes inside their node namespaces.
  for (const n of state.plan.nodes) {
    const inNs = (await run('ip', ['netns', 'pids', n.ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
    for (const what of [`agent-${n.name}`, `proxy-${n.name}`]) t.true(inNs.includes(state.processes.find((p) => p.what === what)!.pid), `${what} runs in ${n.ns}`);
  }

  t.is(state.plan.subnetManager, 'etcd');
  t.true(readFileSync(`/proc/${state.processes.find((p) => p.what === 'agent-node-1')!.pid}/cmdline`, 'utf8').split('\0').includes('--etcd-endpoints'));

  const again = await lab(['up', '--nodes', '3', '--dir', dir, '--ns-prefix', prefix, '--subnet-manager', 'etcd']);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, /already up/);

  const rows = await check(t, dir);
  t.is(rows.filter((r) => r.check === 'pod to pod').length, 6);
  for (const c of ['ClusterIP', 'ClusterIP UDP', 'ClientIP affinity', 'NodePort from outside']) t.true(rows.some((r) => r.check === c), c);
  t.regex(rows.find((r) => r.id === 'svc:default/web:80/TCP')!.detail, /web-1:\d+ web-2:\d+ web-3:\d+/);
  t.regex(rows.find((r) => r.id === 'svc:default/external:9090/TCP')!.detail, /outside:\d+/);

  const status = await lab(['status', '--dir', dir]);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /etcd subnet manager \(http:\/\/192\.168\.50\.254:2379\)/);
  t.regex(status.stdout, /node-3 +192\.168\.50\.3 +10\.244\.\d+\.0\/24 +([0-9a-f]{2}:){5}[0-9a-f]{2} +running +running/);
  t.regex(status.stdout, /web-sticky +ClusterIP +10\.254\.0\.\d+ +80\/TCP +ClientIP/);
  const webIP = /web-2 +node-2 +(10\.244\.\d+\.\d+)/.exec(status.stdout)![1]!;

  const ex = await lab(['exec', '--dir', dir, 'web-2', '--', 'ip', '-br', 'addr', 'show', 'eth0']);
  t.is(ex.code, 0, ex.stderr);
  t.true(ex.stdout.includes(webIP));
  t.not((await lab(['exec', '--dir', dir, 'web-2', '--', 'false'])).code, 0);

  // Scale web to four pods and add a Service over the client pods.
  const change = join(dir, '..', 'change.yaml');
  writeFileSync(change, [
    'apiVersion: v1', 'kind: Pod', 'metadata: {name: web-4, labels: {app: web}}', 'spec: {nodeName: node-3, ports: [8080, 5353]}', '---',
    'apiVersion: v1', 'kind: Service', 'metadata: {name: clients}', 'spec:', '  selector: {app: client}', '  ports: [{name: echo, port: 7000, targetPort: 8080}]', '',
  ].join('\n'));
  const ap = await lab(['apply', '--dir', dir, '-f', change]);
  t.is(ap.code, 0, ap.stderr);
  t.regex(ap.stdout, /service\/clients applied \(10\.254\.0\.\d+\)/);
  t.regex(ap.stdout, /pod\/web-4 created on node-3/);
  const rows2 = await check(t, dir);
  t.regex(rows2.find((r) => r.id === 'svc:default/web:80/TCP')!.detail, /web-4:\d+/);
  t.regex(rows2.find((r) => r.id === 'svc:default/clients:7000/TCP')!.detail, /client-1:\d+ client-2:\d+ client-3:\d+|client-\d:\d+/);

  const del = await lab(['delete', '--dir', dir, 'pod', 'web-4']);
  t.is(del.code, 0, del.stderr);
  t.is((await lab(['delete', '--dir', dir, '-f', change])).code, 1, 'web-4 is already gone');
  t.is((await listNetns()).filter((n) => n.startsWith(`${prefix}p-`)).length, 6, 'web-4\'s namespace is gone, the six default pods stay');
  const rows3 = await check(t, dir);
  t.false(rows3.some((r) => r.id.includes('clients')));
  t.notRegex(rows3.find((r) => r.id === 'svc:default/web:80/TCP')!.detail, /web-4/);

  // Real kubectl against the lab API (the way `lab up` says): the cluster as kubectl shows it,
  // then a Service changed with kubectl; the proxies follow and the check passes on the new port.
  t.regex(up.stderr, /kubectl: knet lab kubectl --dir .* get pods -A -o wide/);
  const kubectl = (...args: string[]) => lab(['kubectl', '--dir', dir, ...args]);
  const nodes = await kubectl('get', 'nodes', '--no-headers');
  t.is(nodes.code, 0, nodes.stderr);
  t.deepEqual(nodes.stdout.trim().split('\n').map((l) => l.split(/\s+/).slice(0, 2).join(' ')), ['node-1 Ready', 'node-2 Ready', 'node-3 Ready']);
  const pods = await kubectl('get', 'pods', '-o', 'wide', '--no-headers', '-l', 'app=web');
  t.deepEqual(pods.stdout.trim().split('\n').map((l) => l.split(/\s+/).slice(0, 3).join(' ')), ['web-1 1/1 Running', 'web-2 1/1 Running', 'web-3 1/1 Running']);
  const patched = await kubectl('patch', 'svc', 'web', '--type', 'json', '-p', '[{"op":"replace","path":"/spec/ports/0/port","value":8081}]');
  t.is(patched.code, 0, patched.stderr);
  t.regex(patched.stdout, /service\/web patched/);
  const rows4 = await check(t, dir);
  t.regex(rows4.find((r) => r.id === 'svc:default/web:8081/TCP')!.detail, /web-1:\d+ web-2:\d+ web-3:\d+/);
  t.false(rows4.some((r) => r.id === 'svc:default/web:80/TCP'));

  // Nothing on the lab's network reaches the API's store or writes through the API unasked:
  // the outside host cannot connect to the lab API's etcd, a /registry/ key it writes into the
  // agents' etcd is not the API's, and the API refuses it without a token.
  const outside = (...cmd: string[]) => run('ip', ['netns', 'exec', state.plan.outside.ns, ...cmd]).then(() => 0, (e: { code?: number }) => e.code ?? 1);
  t.not(await outside('curl', '-sS', '-m', '3', '-o', '/dev/null', 'http://192.168.50.254:2381/version'), 0, 'the lab API\'s etcd is on the underlay namespace\'s loopback only');
  const hijack = Buffer.from(JSON.stringify({ metadata: { name: 'web' }, spec: { clusterIP: '10.254.0.10', ports: [{ port: 8081 }] } })).toString('base64');
  await outside('curl', '-sS', '-m', '3', '-X', 'POST', '-d', JSON.stringify({ key: Buffer.from('/registry/services/default/web').toString('base64'), value: hijack }), 'http://192.168.50.254:2379/v3/kv/put');
  t.deepEqual(JSON.parse((await kubectl('get', 'svc', 'web', '-o', 'json')).stdout).spec.selector, { app: 'web' }, 'the Service is untouched');
  const anonymous = await run('ip', ['netns', 'exec', state.plan.outside.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'DELETE', 'http://192.168.50.254:6443/api/v1/namespaces/default/services/web']);
  t.is(anonymous.stdout, '401');

  const down = await lab(['down', '--dir', dir]);
  t.is(down.code, 0, down.stderr);
  await assertNothingLeft(t, dir, prefix, pids);
  t.false(existsSync(dir), 'the lab directory is removed');
  t.is(await rootNetwork(), before, 'the machine\'s own network is unchanged');
  t.regex((await lab(['down', '--dir', dir])).stderr, /nothing to do/);
});

/**
 * Breaks the lab's copy of the CNI plugin as soon as `up` has prepared it, so the "pods" step
 * fails for real (a runtime's ADD failing), after the processes and namespaces exist.
 */
function breakCniAfterPrepare(dir: string): (text: string) => void {
  let done = false;
  return (text) => {
    if (done || !text.includes('  prepare: ')) return;
    done = true;
    writeFileSync(join(dir, 'cni', 'bin', 'knet'), '#!/bin/sh\necho \'{"cniVersion":"1.1.0","code":11,"msg":"injected by the test"}\'\nexit 1\n');
  };
}

rootTest('a failed up removes what it made and names the step and its log', async (t) => {
  const { dir, prefix } = newLab(t);
  const r = await lab(['up', '--nodes', '2', '--dir', dir, '--ns-prefix', prefix], { onStderr: breakCniAfterPrepare(dir) });
  t.is(r.code, 1);
  t.regex(r.stderr, /step "pods" failed: CNI ADD for pod .* failed: .*injected by the test/);
  t.regex(r.stderr, /log: /);
  await assertNothingLeft(t, dir, prefix, []);
  t.true(existsSync(join(dir, 'logs', 'agent-node-1.log')), 'the logs stay for reading');
  // And a second up works in the same directory.
  const ok = await lab(['up', '--nodes', '1', '--dir', dir, '--ns-prefix', prefix, '--no-workload']);
  t.is(ok.code, 0, ok.stderr);
  const pids = (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState).processes.map((p) => p.pid);
  t.is((await lab(['down', '--dir', dir])).code, 0);
  await assertNothingLeft(t, dir, prefix, pids);
});

rootTest('Ctrl-C during up leaves nothing behind', async (t) => {
  const { dir, prefix } = newLab(t);
  let pids: number[] = [];
  let sent = false;
  const r = await lab(['up', '--nodes', '2', '--dir', dir, '--ns-prefix', prefix], {
    onStderr: (text, kill) => {
      if (!sent && text.includes('starting agent-node-2')) {
        sent = true;
        try { pids = (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState).processes.map((p) => p.pid); } catch { /* mid-write */ }
        kill('SIGINT');
      }
    },
  });
  t.true(sent);
  t.is(r.code, 130, r.stderr);
  t.regex(r.stderr, /interrupted during "(start agents|start proxies|leases)"/);
  await assertNothingLeft(t, dir, prefix, pids);
  t.false(existsSync(dir));
});

/**
 * A lab on the kube subnet manager: no flannel etcd; each agent runs --kube-subnet-mgr and
 * has published flannel's annotations on its Node; the podCIDRs the lab API allocated are
 * distinct /24s of the cluster CIDR, match each node's subnet.env and show in `lab status`.
 */
async function assertKubeSubnetManager(t: ExecutionContext, dir: string, state: LabState, backendType: 'vxlan' | 'ovs-gre'): Promise<void> {
  t.is(state.plan.subnetManager, 'kube');
  t.false(state.processes.some((p) => p.what === 'flannel-etcd'), 'no flannel etcd in kube mode');
  t.false(existsSync(join(dir, 'etcd')), 'no flannel etcd data');
  t.deepEqual(JSON.parse(readFileSync(join(dir, 'net-conf.json'), 'utf8')), JSON.parse(state.plan.networkConfig));
  const got = await lab(['kubectl', '--dir', dir, 'get', 'nodes', '-o', 'json']);
  t.is(got.code, 0, got.stderr);
  const nodes = (JSON.parse(got.stdout) as { items: Node[] }).items;
  t.deepEqual(nodes.map((n) => n.metadata.name), state.plan.nodes.map((n) => n.name));
  const status = await lab(['status', '--dir', dir]);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /kube subnet manager \(Node podCIDRs\)/);
  const cidrs = new Set<string>();
  for (const n of state.plan.nodes) {
    const agent = state.processes.find((p) => p.what === `agent-${n.name}`)!;
    const cmdline = readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8').split('\0');
    t.true(cmdline.includes('--kube-subnet-mgr') && !cmdline.some((a) => a.startsWith('--etcd')), `agent-${n.name} runs the kube subnet manager`);
    const node = nodes.find((x) => x.metadata.name === n.name)!;
    const a = node.metadata.annotations ?? {};
    t.is(a['flannel.alpha.coreos.com/kube-subnet-manager'], 'true');
    t.is(a['flannel.alpha.coreos.com/public-ip'], n.ip);
    t.is(a['flannel.alpha.coreos.com/backend-type'], backendType);
    if (backendType === 'vxlan') t.regex(a['flannel.alpha.coreos.com/backend-data'] ?? '', /^\{"VNI":1,"VtepMAC":"([0-9a-f]{2}:){5}[0-9a-f]{2}"\}$/);
    else t.is(a['flannel.alpha.coreos.com/backend-data'], 'null', 'GRE leases have no backend data');
    const cidr = node.spec?.podCIDR ?? '';
    t.regex(cidr, /^10\.244\.\d+\.0\/24$/, 'a /24 of the cluster CIDR, not the cluster CIDR itself');
    t.deepEqual(node.spec?.podCIDRs, [cidr]);
    cidrs.add(cidr);
    const env = readSubnetFile(join(dir, 'nodes', n.name, 'subnet.env'));
    const subnet = env === null ? null : subnetFromEnv(env);
    t.is(subnet ? formatCidr(subnet) : null, cidr, `${n.name}'s subnet.env holds its podCIDR`);
    t.like(node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable'), { status: 'False' });
    t.regex(status.stdout, new RegExp(`${n.name} +${n.ip.replace(/\./g, '\\.')} +${cidr.replace(/[./]/g, '\\$&')} `));
  }
  t.is(cidrs.size, state.plan.nodes.length, 'every node has its own podCIDR');
}

// The same lab with the userspace proxy (`mode: userspace` in every node's
// KubeProxyConfiguration), on the default kube subnet manager: flannel's Node annotations, the
// whole check passes, then nothing is left.
rootTest('userspace proxy mode on the kube subnet manager (the default): up, Node annotations and podCIDRs, check, down', async (t) => {
  const { dir, prefix } = newLab(t);
  const up = await lab(['up', '--nodes', '2', '--dir', dir, '--ns-prefix', prefix, '--proxy-mode', 'userspace']);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stderr, /userspace proxies, kube subnet manager/);
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
  await assertKubeSubnetManager(t, dir, state, 'vxlan');
  t.regex(readFileSync(join(dir, 'nodes', 'node-1', 'kube-proxy.yaml'), 'utf8'), /^mode: userspace$/m);
  const rows = await check(t, dir);
  for (const c of ['pod to pod', 'ClusterIP', 'ClusterIP UDP', 'ClientIP affinity', 'NodePort from outside']) t.true(rows.some((r) => r.check === c), c);
  t.is((await lab(['down', '--dir', dir])).code, 0);
  await assertNothingLeft(t, dir, prefix, state.processes.map((p) => p.pid));
});

// The same lab in nftables mode: every node's proxy programs kube-proxy's nftables table (and
// no KUBE-* iptables chains); the whole check passes, then nothing is left.
rootTest('nftables proxy mode: up, check, down', async (t) => {
  const { dir, prefix } = newLab(t, 'n');
  const up = await lab(['up', '--nodes', '2', '--dir', dir, '--ns-prefix', prefix, '--proxy-mode', 'nftables']);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stderr, /nftables proxies/);
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
  t.regex(readFileSync(join(dir, 'nodes', 'node-1', 'kube-proxy.yaml'), 'utf8'), /^mode: nftables$/m);
  const node1 = state.plan.nodes[0]!.ns;
  t.regex((await nftListTable({ netns: node1 }, 'ip', 'kube-proxy')) ?? '', /map service-ips/);
  t.notRegex(await iptablesSave({ backend: 'nft', netns: node1 }, 'nat'), /KUBE-SERVICES/);
  const rows = await check(t, dir);
  for (const c of ['pod to pod', 'ClusterIP', 'ClusterIP UDP', 'ClientIP affinity', 'NodePort from outside']) t.true(rows.some((r) => r.check === c), c);
  t.is((await lab(['down', '--dir', dir])).code, 0);
  await assertNothingLeft(t, dir, prefix, state.processes.map((p) => p.pid));
});

/** Processes whose command line names the lab directory (OVS daemons name their run dirs). */
function processesMentioning(dir: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(dir) && pidRunning(Number(pid))) out.push(`${pid}: ${cmd.replace(/\0/g, ' ')}`);
    } catch { /* gone */ }
  }
  return out;
}

// --backend ovs-gre: an ovsdb-server + ovs-vswitchd pair per node (userspace datapath, run
// directories under the lab's), the agents on brphy with the ovs-gre backend and the default
// kube subnet manager; the whole check passes, then no OVS daemon or anything else is left.
rootTest('ovs-gre backend on the kube subnet manager: up, Node annotations, check, down: no OVS daemon left', async (t) => {
  t.timeout(120_000);
  const { dir, prefix } = newLab(t);
  // A failed up stops the OVS daemons it started, too.
  const failed = await lab(['up', '--nodes', '2', '--dir', dir, '--ns-prefix', prefix, '--backend', 'ovs-gre'], { onStderr: breakCniAfterPrepare(dir) });
  t.is(failed.code, 1, failed.stderr);
  t.regex(failed.stderr, / {2}tunnel neighbours: \d/, 'it failed after the OVS daemons ran');
  t.regex(failed.stderr, /step "pods" failed/);
  await assertNothingLeft(t, dir, prefix, []);
  t.deepEqual(processesMentioning(dir), [], 'a failed up leaves no OVS daemon');

  const up = await lab(['up', '--nodes', '3', '--dir', dir, '--ns-prefix', prefix, '--backend', 'ovs-gre']);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stderr, /ovs-gre overlay/);
  for (const step of ['ovs', 'tunnel neighbours']) t.regex(up.stderr, new RegExp(`  ${step}: \\d+\\.\\d+s`));
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
  t.is(state.plan.backend, 'ovs-gre');
  t.deepEqual(JSON.parse(state.plan.networkConfig).Backend, { Type: 'ovs-gre', DatapathType: 'netdev' });
  await assertKubeSubnetManager(t, dir, state, 'ovs-gre');
  for (const n of state.plan.nodes) {
    for (const d of ['ovsdb-server', 'ovs-vswitchd']) t.true(state.processes.some((p) => p.what === `${d}-${n.name}`), `${d} of ${n.name} is recorded`);
    t.regex((await run('ip', ['netns', 'exec', n.ns, 'ip', '-br', 'addr', 'show', 'brphy'])).stdout, new RegExp(`${n.ip.replace(/\./g, '\\.')}/24`));
  }
  const rows = await check(t, dir);
  t.is(rows.filter((r) => r.check === 'pod to pod').length, 6);
  for (const c of ['ClusterIP', 'ClusterIP UDP', 'ClientIP affinity', 'NodePort from outside']) t.true(rows.some((r) => r.check === c), c);
  t.is((await lab(['down', '--dir', dir])).code, 0);
  await assertNothingLeft(t, dir, prefix, state.processes.map((p) => p.pid));
  t.deepEqual(processesMentioning(dir), [], 'no OVS daemon (or other process) of the lab is left');
  t.false(existsSync(dir));
});
