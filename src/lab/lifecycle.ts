// `lab up` and `lab down`. `up` records every namespace and process in state.json before it
// makes it, so a failure, a Ctrl-C or a later `down` removes exactly what this lab made: its
// processes, its namespaces (named with its prefix; links, routes and rules live and die with
// them) and its files. Nothing is created in the machine's own network namespace.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '../kernel/exec.ts';
import { addNetns, deleteNetns, listNetns } from '../kernel/netns.ts';
import { ipBatch } from '../kernel/iproute.ts';
import { attachUnderlayToBridge } from '../kernel/ovs.ts';
import { LabApiClient } from './client.ts';
import { conflistPath, createPod, pool } from './pods.ts';
import { ECHO_SERVER, PROBE_CLIENT } from './scripts.ts';
import { primeTunnelNeighbours, startOvsDaemons, stopOvsAt, type OvsInstance } from './ovs.ts';
import { paths, readState, writeState, type LabState } from './state.ts';
import { childEnv, FatalWaitError, knetBinaries, packageRoot, selfCommand, startInNetns, stopPid, waitFor } from './shell.ts';
import { agentArgs, cniConflist, ETCD_PORT, kubeconfigText, kubeProxyConfig, labNodeObject, OVS_UNDERLAY_BRIDGE, ovsNodeRoute, planLab, REGISTRY_ETCD_PORT, subnetManagerOf, underlayLinks, type LabPlan } from './topology.ts';
import { MASTERS, NODES, tokenLine } from './api/auth.ts';
import { defaultWorkload } from './workload.ts';
import { readSubnetFile } from '../subnet/subnet-env.ts';
import { subnetFromEnv } from '../subnet/subnet-env-text.ts';
import { pidAlive } from '../util/process.ts';
import { formatCidr } from '../subnet/cidr.ts';

export interface UpOptions {
  dir: string;
  nodes: number;
  backend?: string;
  proxyMode?: string;
  nsPrefix?: string;
  /** kube (default) or etcd. */
  subnetManager?: string;
  /** Skip the default workload (benchmarks of the bare cluster). */
  noWorkload?: boolean;
  progress: (line: string) => void;
}

export class Interrupted extends FatalWaitError {
  constructor() { super('interrupted'); }
}

export class StepError extends Error {
  constructor(readonly step: string, override readonly cause: unknown, readonly logPath: string) {
    super(`step "${step}" failed: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

/** Set by a signal handler; every wait and step boundary checks it. */
export const abort = { requested: false };

function checkAbort(): void {
  if (abort.requested) throw new Interrupted();
}

async function waitAbortable<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  return waitFor(what, async () => { checkAbort(); return fn(); }, timeoutMs, everyMs);
}

/** The pod subnet a node's agent recorded, or null before it has written one. */
function nodeSubnet(file: string): string | null {
  const text = readSubnetFile(file);
  const subnet = text === null ? null : subnetFromEnv(text);
  return subnet ? formatCidr(subnet) : null;
}

const METRICS_FETCH = "fetch('http://127.0.0.1:10249/metrics', { signal: AbortSignal.timeout(1000) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))";

/** Whether the node's proxy finished a sync (kube-proxy's last-sync metric is set). */
async function proxySynced(ns: string): Promise<boolean> {
  try {
    // The metrics port listens on the node's loopback; Node's fetch, run inside the namespace,
    // reads it (no curl needed).
    const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, '-e', METRICS_FETCH], { timeoutMs: 5000, env: childEnv() });
    const m = /^kubeproxy_sync_proxy_rules_last_timestamp_seconds (\S+)$/m.exec(stdout);
    return !!m && Number(m[1]) > 0;
  } catch {
    return false;
  }
}

/** Is the lab recorded in DIR running (API answers, every recorded process alive)? */
export async function labHealth(s: LabState): Promise<{ ok: boolean; problems: string[] }> {
  const problems: string[] = [];
  const nss = new Set(await listNetns());
  for (const ns of s.namespaces) if (!nss.has(ns)) problems.push(`namespace ${ns} is gone`);
  for (const p of s.processes) if (!pidAlive(p.pid)) problems.push(`${p.what} (pid ${p.pid}) is not running; log: ${p.log}`);
  if (!(await new LabApiClient(paths(s.dir).socket).healthy())) problems.push('the lab API does not answer');
  return { ok: problems.length === 0 && s.phase === 'up', problems };
}

export async function labUp(o: UpOptions): Promise<LabState> {
  const existing = readState(o.dir);
  if (existing) {
    const h = await labHealth(existing);
    if (h.ok) {
      o.progress(`lab ${existing.plan.labId} is already up in ${o.dir} (${existing.plan.nodes.length} nodes); nothing to do`);
      if (existing.plan.nodes.length !== o.nodes || (o.proxyMode && o.proxyMode !== existing.plan.proxyMode) || (o.subnetManager && o.subnetManager !== subnetManagerOf(existing.plan))) {
        o.progress(`  note: it runs ${existing.plan.nodes.length} nodes with ${existing.plan.proxyMode} proxies and the ${subnetManagerOf(existing.plan)} subnet manager; to change that, knet lab down first`);
      }
      return existing;
    }
    throw new Error(`a lab is recorded in ${o.dir} but is not healthy (${h.problems.slice(0, 3).join('; ') || existing.phase}); run knet lab down${o.dir ? ` --dir ${o.dir}` : ''} first`);
  }
  if (process.getuid?.() !== 0) throw new Error('knet lab needs root (it creates network namespaces)');
  const bins = knetBinaries();
  const plan = planLab({ labId: randomBytes(3).toString('hex'), nodes: o.nodes, ...(o.nsPrefix ? { nsPrefix: o.nsPrefix } : {}), ...(o.backend ? { backend: o.backend } : {}), ...(o.proxyMode ? { proxyMode: o.proxyMode } : {}), ...(o.subnetManager ? { subnetManager: o.subnetManager } : {}) });
  const kube = subnetManagerOf(plan) === 'kube';
  const taken = (await listNetns()).filter((n) => n.startsWith(plan.nsPrefix));
  if (taken.length) throw new Error(`namespaces with prefix ${plan.nsPrefix} already exist (${taken.slice(0, 3).join(', ')}); choose another prefix`);
  const P = paths(o.dir);
  rmSync(P.logs, { recursive: true, force: true }); // a failed up's logs, now superseded
  const state: LabState = { version: 1, dir: o.dir, plan, namespaces: [], processes: [], phase: 'starting', startedAt: new Date().toISOString(), steps: [] };
  mkdirSync(P.logs, { recursive: true });
  writeState(state);
  const t0 = Date.now();
  let current = 'prepare';
  let logPath = P.logs;
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    checkAbort();
    current = name;
    logPath = P.logs;
    const s = Date.now();
    const r = await fn();
    const seconds = (Date.now() - s) / 1000;
    state.steps!.push({ step: name, seconds });
    writeState(state);
    o.progress(`  ${name}: ${seconds.toFixed(2)}s`);
    return r;
  };
  const started = async (what: string, ns: string, file: string, args: string[], extra: { cwd?: string } = {}) => {
    const log = P.log(what);
    logPath = log;
    o.progress(`    starting ${what} (log ${log})`);
    const st = await startInNetns(ns, file, args, log, { env: childEnv({ KNET_LOG_LEVEL: 'info' }), ...extra });
    state.processes.push({ what, pid: st.pid, log });
    writeState(state);
    return st;
  };
  /** Waits for a started process to be ready; a failure names that process's log. */
  // Node processes start slowly on a busy machine: more nodes, more patience.
  const patience = 60_000 + 5_000 * plan.nodes.length;
  const waitProcess = async <T>(what: string, ready: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = patience, everyMs = 100): Promise<T> => {
    const proc = state.processes.find((p) => p.what === what)!;
    try {
      return await waitAbortable(ready, async () => {
        if (!pidAlive(proc.pid)) throw new FatalWaitError(`${what} exited`);
        return fn();
      }, timeoutMs, everyMs);
    } catch (err) {
      logPath = proc.log;
      throw err;
    }
  };
  const newNs = async (name: string) => {
    state.namespaces.push(name);
    writeState(state);
    await addNetns(name);
  };

  o.progress(`knet lab ${plan.labId}: ${plan.nodes.length} nodes, ${plan.backend} overlay, ${plan.proxyMode} proxies, ${subnetManagerOf(plan)} subnet manager, namespaces ${plan.nsPrefix}*, dir ${o.dir}`);
  try {
    let masqueradeAll = false;
    await step('prepare', async () => {
      mkdirSync(P.cniBin, { recursive: true });
      copyFileSync(bins.cni, join(P.cniBin, 'knet'));
      chmodSync(join(P.cniBin, 'knet'), 0o755);
      writeFileSync(P.echo, ECHO_SERVER);
      writeFileSync(P.probe, PROBE_CLIENT);
      writeCredentials(plan, P);
      // kube mode: flannel's net-conf.json, which the agents read as a ConfigMap gives it them.
      if (kube) writeFileSync(P.netConf, plan.networkConfig + '\n');
      // Pod to a Service answered by a pod on the same bridge needs bridged traffic to see
      // iptables (br_netfilter, per namespace). The lab never loads a module: without it, the
      // proxies masquerade all service traffic instead.
      masqueradeAll = !existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables');
      state.masqueradeAll = masqueradeAll;
      for (const n of plan.nodes) {
        const d = P.node(n.name);
        mkdirSync(join(d, 'net.d'), { recursive: true });
        mkdirSync(join(d, 'ipam'), { recursive: true });
        writeFileSync(conflistPath(o.dir, n.name), cniConflist({ subnetFile: join(d, 'subnet.env'), dataDir: join(d, 'ipam') }));
        writeFileSync(join(d, 'kube-proxy.yaml'), kubeProxyConfig(plan, n, masqueradeAll));
      }
    });
    await step('namespaces', async () => {
      o.progress(`    creating ${plan.nodes.length + 2} namespaces and the underlay bridge ${plan.underlay.bridge} (${plan.underlay.ip}/24)`);
      await newNs(plan.underlay.ns);
      await newNs(plan.outside.ns);
      for (const n of plan.nodes) await newNs(n.ns);
      const l = underlayLinks(plan);
      await ipBatch(plan.underlay.ns, l.underlay);
      await ipBatch(plan.outside.ns, l.outside);
      await pool(plan.nodes, 8, async (n) => {
        await ipBatch(n.ns, l.perNode.get(n.ns)!);
        const sysctls = ['net.ipv4.ip_forward=1'];
        if (!masqueradeAll) sysctls.push('net.bridge.bridge-nf-call-iptables=1');
        await run('ip', ['netns', 'exec', n.ns, 'sysctl', '-q', '-w', ...sysctls]);
      });
    });
    // ovs-gre (userspace datapath): one ovsdb-server + ovs-vswitchd per node, detached, with its
    // run directory under the lab's; the node's underlay port eth0 on OVS bridge brphy, which
    // takes the node's address (src/overlay/ovs-gre/README.md).
    const ovs = new Map<string, OvsInstance>();
    if (plan.backend === 'ovs-gre') {
      await step('ovs', async () => {
        o.progress(`    starting ovsdb-server and ovs-vswitchd in ${plan.nodes.length} node namespaces (run dirs ${P.ovs('NODE')})`);
        await pool(plan.nodes, 4, async (n) => {
          checkAbort();
          // Frames reach OVS's AF_PACKET socket on eth0 as the underlay sent them: TCP from the
          // underlay namespace (etcd, the lab API, the outside host) needs checksums filled in.
          await run('ip', ['netns', 'exec', plan.underlay.ns, 'ethtool', '-K', n.uplink, 'tx', 'off']);
          const runDir = P.ovs(n.name);
          logPath = join(runDir, 'ovs-vswitchd.log');
          const inst = await startOvsDaemons(n.ns, { runDir, detach: true });
          ovs.set(n.name, inst);
          const pids = inst.pids();
          if (pids.ovsdbServer) state.processes.push({ what: `ovsdb-server-${n.name}`, pid: pids.ovsdbServer, log: join(runDir, 'ovsdb-server.log') });
          if (pids.vswitchd) state.processes.push({ what: `ovs-vswitchd-${n.name}`, pid: pids.vswitchd, log: join(runDir, 'ovs-vswitchd.log') });
          writeState(state);
          await attachUnderlayToBridge(inst.target, OVS_UNDERLAY_BRIDGE, 'eth0', `${n.ip}/${plan.underlay.prefixLen}`);
          await ipBatch(n.ns, [ovsNodeRoute(plan)]);
        });
      });
    }
    await step('etcd', async () => {
      const u = plan.underlay;
      const etcd = async (what: string, dataDir: string, clients: string[], peerPort: number) => {
        const peer = `http://127.0.0.1:${peerPort}`;
        const st = await started(what, u.ns, 'etcd', ['--name', what, '--data-dir', dataDir, '--listen-client-urls', clients.join(','),
          '--advertise-client-urls', clients[0]!, '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
          '--initial-cluster', `${what}=${peer}`, '--logger', 'zap', '--log-outputs', 'stderr']);
        await waitProcess(what, `${what} to serve clients`, async () => /serving client traffic|ready to serve client requests/.test(readFileSync(st.log, 'utf8')), 30_000);
      };
      // The lab API's etcd listens on the underlay namespace's loopback only: nothing on the
      // lab's network (a node, the outside host) can write /registry/ behind the API's back.
      const registry = etcd('etcd', P.registryEtcdData, [`http://127.0.0.1:${REGISTRY_ETCD_PORT}`], REGISTRY_ETCD_PORT + 1);
      // etcd mode: the agents lease subnets in a second etcd, on the underlay (flannel's etcd).
      const flannel = kube ? Promise.resolve() : etcd('flannel-etcd', P.etcdData, [`http://${u.ip}:${ETCD_PORT}`, `http://127.0.0.1:${ETCD_PORT}`], ETCD_PORT + 1);
      await Promise.all([registry, flannel]);
    });
    const api = new LabApiClient(P.socket);
    await step('lab API', async () => {
      const self = selfCommand();
      await started('lab-api', plan.underlay.ns, self.file, [...self.args, 'lab', '_api', '--dir', o.dir], { cwd: packageRoot() });
      await waitProcess('lab-api', 'the lab API', () => api.healthy(), 30_000);
    });
    // kube mode: the Nodes exist before their agents, as a kubelet registers its Node before
    // flannel's pod runs; the lab API gives each its podCIDR, the agent waits for it.
    if (kube) await step('node objects', () => putNodes(api, plan, () => null));
    // Agents and proxies start together: a proxy needs only the API (its Node object, with the
    // podCIDR, reaches it through its informer once the subnet is known).
    await step('start agents', async () => {
      for (const n of plan.nodes) {
        await started(`agent-${n.name}`, n.ns, process.execPath, [bins.cli, 'agent', ...agentArgs(plan, n, {
          subnetFile: join(P.node(n.name), 'subnet.env'), kubeconfig: P.nodeKubeconfig(n.name), netConf: P.netConf, ovsRunDir: P.ovs(n.name),
        })]);
      }
    });
    await step('start proxies', async () => {
      for (const n of plan.nodes) {
        await started(`proxy-${n.name}`, n.ns, process.execPath, [bins.cli, 'proxy', '--kubeconfig', P.nodeKubeconfig(n.name), '--config', join(P.node(n.name), 'kube-proxy.yaml'),
          '--hostname-override', n.name, '--node-ip', n.ip, '--iptables-backend', 'nft']);
      }
    });
    await step('leases', async () => {
      await pool(plan.nodes, 16, (n) => waitProcess(`agent-${n.name}`, `the subnet lease of ${n.name}`, async () => {
        return nodeSubnet(join(P.node(n.name), 'subnet.env'));
      }));
    });
    if (plan.backend === 'ovs-gre') {
      // Every node's OVS learns its peers' underlay MACs now that the GRE ports exist.
      await step('tunnel neighbours', () => primeTunnelNeighbours(plan.nodes.map((n) => ({ ns: n.ns, ip: n.ip, ovs: ovs.get(n.name)! })), patience));
    }
    // etcd mode: the Nodes get the podCIDRs the agents leased. (kube mode made them before the
    // agents; replacing them now would drop the agents' annotations.)
    if (!kube) await step('node objects', () => putNodes(api, plan, (n) => nodeSubnet(join(P.node(n.name), 'subnet.env'))));
    await step('proxy sync', async () => {
      await pool(plan.nodes, 16, (n) => waitProcess(`proxy-${n.name}`, `the proxy on ${n.name} to sync its rules`, () => proxySynced(n.ns), patience, 250));
    });
    if (!o.noWorkload) {
      const w = defaultWorkload(plan.nodes.map((n) => n.name));
      await step('pods', async () => {
        o.progress(`    ${w.pods.length} pods through the CNI plugin, and the outside host's echo server`);
        await started('outside-echo', plan.outside.ns, process.execPath, [P.echo, 'outside', '9090']);
        await pool(w.pods, 6, async (p) => { checkAbort(); await createPod(state, api, p); });
      });
      await step('services', async () => {
        for (const s of w.services) await api.putService(s);
        for (const sl of w.slices) await api.putSlice(sl);
      });
    }
    state.phase = 'up';
    writeState(state);
    o.progress(`lab ${plan.labId} up in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    return state;
  } catch (err) {
    const interrupted = err instanceof Interrupted || abort.requested;
    o.progress(interrupted ? `interrupted during "${current}"; removing what was made` : `lab up: step "${current}" failed: ${(err as Error).message}\n  log: ${logPath}${logTail(logPath)}\n  removing what was made (logs stay in ${P.logs})`);
    await teardown(state, { keepLogs: !interrupted, progress: o.progress });
    if (interrupted) throw new Interrupted();
    throw new StepError(current, err, logPath);
  }
}

async function putNodes(api: LabApiClient, plan: LabPlan, podCIDR: (n: LabPlan['nodes'][number]) => string | null): Promise<void> {
  const now = new Date();
  await pool(plan.nodes, 8, async (n) => { await api.putNode(labNodeObject(n, podCIDR(n), now)); });
}

/**
 * The lab API's users, as a cluster has them: an administrator (DIR/kubeconfig, for kubectl)
 * and one per node (its proxy and agent: user system:node:NAME in group system:nodes, which may
 * read everything and change only its own Node). Tokens are random per lab; the files are 0600.
 */
function writeCredentials(plan: LabPlan, P: ReturnType<typeof paths>): void {
  const token = () => randomBytes(24).toString('hex');
  const admin = token();
  const lines = [tokenLine(admin, 'knet-lab-admin', [MASTERS])];
  writeFileSync(P.kubeconfig, kubeconfigText(plan.apiServer, admin, 'knet-lab-admin'), { mode: 0o600 });
  for (const n of plan.nodes) {
    const t = token();
    lines.push(tokenLine(t, `system:node:${n.name}`, [NODES]));
    mkdirSync(P.node(n.name), { recursive: true });
    writeFileSync(P.nodeKubeconfig(n.name), kubeconfigText(plan.apiServer, t, `system:node:${n.name}`), { mode: 0o600 });
  }
  writeFileSync(P.tokens, lines.join('\n') + '\n', { mode: 0o600 });
}

/** Stops the lab's processes, deletes its namespaces and files. Never throws for a missing piece. */
export async function teardown(s: LabState, o: { keepLogs?: boolean; progress?: (l: string) => void } = {}): Promise<{ namespaces: number; processes: number }> {
  const say = o.progress ?? (() => undefined);
  // Proxies and agents first (they would otherwise log about etcd and the API going away).
  const order = (w: string) => (w.startsWith('proxy') ? 0 : w.startsWith('agent') ? 1 : w === 'lab-api' ? 2 : 3);
  // Only processes whose command line names this lab's directory: a recorded pid may since
  // have been reused by an unrelated process.
  const procs = [...s.processes].sort((a, b) => order(a.what) - order(b.what)).filter((p) => cmdlineMentions(p.pid, s.dir));
  await pool(procs, 16, (p) => stopPid(p.pid));
  // ovs-gre: every node's OVS pair, by pidfile (also one started but not yet recorded).
  const P = paths(s.dir);
  await pool(s.plan.nodes, 8, (n) => stopOvsAt(P.ovs(n.name)));
  const mine = [...new Set([...s.namespaces, ...(await listNetns()).filter((n) => n.startsWith(s.plan.nsPrefix))])];
  // Pods first, then nodes, the outside host and the underlay last.
  const rank = (n: string) => (n === s.plan.underlay.ns ? 2 : s.namespaces.includes(n) ? 1 : 0);
  mine.sort((a, b) => rank(a) - rank(b));
  for (const r of [0, 1, 2]) await pool(mine.filter((n) => rank(n) === r), 8, (n) => deleteNetns(n));
  say(`  stopped ${procs.length} processes, deleted ${mine.length} namespaces`);
  for (const f of [P.socket, P.kubeconfig, P.tokens, P.kubectlCache, P.echo, P.probe, P.netConf, join(s.dir, 'cni'), join(s.dir, 'nodes'), P.etcdData, P.registryEtcdData]) rmSync(f, { recursive: true, force: true });
  rmSync(P.state, { force: true });
  if (!o.keepLogs) {
    rmSync(P.logs, { recursive: true, force: true });
    try { if (readdirSync(s.dir).length === 0) rmdirSync(s.dir); } catch { /* not empty or gone */ }
  }
  return { namespaces: mine.length, processes: procs.length };
}

/** The last lines of a log file, indented, for a failure message ('' when not a file). */
function logTail(path: string, lines = 8): string {
  try {
    const text = readFileSync(path, 'utf8').trimEnd();
    return text ? `\n    ${text.split('\n').slice(-lines).map((l) => l.slice(0, 300)).join('\n    ')}` : '';
  } catch {
    return '';
  }
}

function cmdlineMentions(pid: number, dir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((a) => a === dir || a.startsWith(`${dir}/`));
  } catch {
    return false;
  }
}

export async function labDown(dir: string, progress: (l: string) => void): Promise<boolean> {
  const s = readState(dir);
  if (!s) {
    progress(`no lab in ${dir}; nothing to do`);
    return false;
  }
  progress(`tearing down lab ${s.plan.labId} (${s.plan.nsPrefix}*)`);
  await teardown(s, { progress });
  return true;
}

export type { LabPlan };
