// The plugin's commands. Each one validates everything first, then touches IPAM and the kernel;
// a failed ADD undoes what it did (veth, allocation) before reporting the error.
import { writeSync } from 'node:fs';
import { NetlinkError, RT_TABLE_MAIN, macBytes } from '../kernel/netlink/codec.ts';
import type { Rtnl } from '../kernel/netlink/rtnl.ts';
import { IpamStore, PoolExhaustedError } from '../ipam/store.ts';
import { sweepStaleLocks } from '../ipam/lockfile.ts';
import { canonicalCidr, formatCidr4, formatIPv4, parseCidr4, parseIPv4, type Cidr4 } from '../ipam/ipv4.ts';
import {
  SUPPORTED_VERSIONS, checkVersion, decodeStdin, parseEnv, parseNetConf, parseSubnetEnv, planNetwork,
  type CniEnv, type NetConf, type NetworkPlan, type SubnetEnv,
} from './config.ts';
import { CniError, ErrCode, invalidConfig, invalidEnv } from './errors.ts';
import { buildResult, hostVethName, podMac, randomMac, type CniResult } from './result.ts';
import type { CniKernel, PodNetns } from './kernel.ts';
import { checkDataDir, dataDirError, ensureDataDir, readSubnetFile } from './paths.ts';
import { isRecord } from '../model/json.ts';

export interface CniOutcome { stdout: string; exitCode: number }

// KNET_CNI_TRACE=1: phase timings on stderr (stdout belongs to the runtime).
const trace = process.env.KNET_CNI_TRACE === '1'
  ? (what: string) => { writeSync(2, `knet ${performance.now().toFixed(1)}ms ${what}\n`); }
  : () => undefined;

/** Runs one plugin invocation: stdin text and environment in, stdout text and exit code out. */
export async function runCni(stdin: string, env: NodeJS.ProcessEnv, kernel: CniKernel): Promise<CniOutcome> {
  let version = '1.1.0';
  trace('started');
  try {
    const cmd = env.CNI_COMMAND;
    if (cmd === 'VERSION') {
      const j = stdin.trim() ? decodeStdin(stdin) : {};
      const asked = typeof j.cniVersion === 'string' ? j.cniVersion : '1.1.0';
      return ok({ cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] });
    }
    const cniEnv = parseEnv(env);
    const j = decodeStdin(stdin);
    if (typeof j.cniVersion === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(j.cniVersion)) version = j.cniVersion;
    checkVersion(j.cniVersion);
    const conf = parseNetConf(j);
    if (cniEnv.command !== 'STATUS') checkDataDir(conf.dataDir);
    switch (cniEnv.command) {
      case 'ADD': return ok(await cmdAdd(conf, cniEnv, kernel));
      case 'DEL': await cmdDel(conf, cniEnv, kernel); return ok();
      case 'CHECK': await cmdCheck(conf, cniEnv, kernel); return ok();
      case 'GC': await cmdGc(conf, kernel); return ok();
      case 'STATUS': cmdStatus(conf); return ok();
      default: throw new CniError(ErrCode.InvalidEnvironment, `unsupported command ${cniEnv.command}`);
    }
  } catch (e) {
    const err = toCniError(e);
    return { stdout: JSON.stringify(err.toJSON(version)) + '\n', exitCode: 1 };
  }
}

function ok(v?: unknown): CniOutcome {
  return { stdout: v === undefined ? '' : JSON.stringify(v) + '\n', exitCode: 0 };
}

export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof PoolExhaustedError) return new CniError(ErrCode.PoolExhausted, 'no free address in the pod subnet', e.message);
  if (e instanceof NetlinkError) return new CniError(ErrCode.KernelFailure, 'kernel refused a network change', e.message);
  // The only programs the plugin runs are iptables (the node's masquerade chain). Matched by
  // name: importing ExecError would load child_process into every call.
  if (e instanceof Error && e.name === 'ExecError') return new CniError(ErrCode.IptablesFailure, 'iptables failed', e.message);
  const io = (e as NodeJS.ErrnoException)?.code;
  if (io && /^E[A-Z]+$/.test(io)) return new CniError(ErrCode.IoFailure, 'I/O failure', (e as Error).message);
  return new CniError(ErrCode.Internal, 'internal error', e instanceof Error ? e.message : String(e));
}

function readSubnetEnv(conf: NetConf): SubnetEnv | null {
  if (conf.subnet) return null;
  const text = readSubnetFile(conf.subnetFile);
  if (text === null) {
    throw new CniError(ErrCode.TryAgainLater, 'subnet not known yet', `${conf.subnetFile} does not exist (is the overlay agent running?)`);
  }
  return parseSubnetEnv(text, conf.subnetFile);
}

/** Runs IPAM work on dataDir; a file-system error becomes error 5 naming the directory and why. */
function inDataDir<T>(dir: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof CniError || e instanceof PoolExhaustedError) throw e;
    if (/^E[A-Z]+$/.test((e as NodeJS.ErrnoException)?.code ?? '')) throw dataDirError(dir, e);
    throw e;
  }
}

async function withHostRtnl<T>(kernel: CniKernel, f: (nl: Rtnl) => Promise<T>): Promise<T> {
  const nl = kernel.hostRtnl();
  try {
    return await f(nl);
  } finally {
    nl.close();
  }
}

/** CNI_NETNS opened, or the spec's error: 3 when it is gone, 4 when it is not a namespace. */
function openPodNetns(kernel: CniKernel, path: string): PodNetns {
  const st = kernel.netnsState(path);
  if (st === 'missing') throw new CniError(ErrCode.UnknownContainer, 'container network namespace does not exist', `CNI_NETNS ${path} does not exist`);
  if (st === 'not-netns') throw invalidEnv(`CNI_NETNS ${path} is not a network namespace`);
  return kernel.openNetns(path);
}

/** The bridge, created on first use with the gateway address; later ADDs only confirm it. */
async function ensureBridge(nl: Rtnl, conf: NetConf, plan: NetworkPlan): Promise<{ index: number; mac: string }> {
  let br = await nl.getLink(conf.bridge);
  if (!br) {
    try {
      // A fixed MAC keeps the bridge's address from following its lowest-numbered port.
      await nl.createLink({ name: conf.bridge, kind: 'bridge', mtu: plan.mtu, up: true, mac: macBytes(randomMac()) });
    } catch (e) {
      if (!(e instanceof NetlinkError && e.code === 'EEXIST')) throw e;
    }
    br = await nl.getLink(conf.bridge);
    if (!br) throw new CniError(ErrCode.KernelFailure, `bridge ${conf.bridge} vanished while being created`);
  }
  const index = br.index;
  if (!br.up) await nl.setLink(index, { up: true });
  await nl.addAddress4(index, formatIPv4(plan.gateway), plan.subnet.prefix);
  return { index, mac: br.mac };
}

/** The pod end, already in the pod and named: up, its address, its routes (what `ip` would do there). */
async function configurePod(pod: Rtnl, ifname: string, ip: string, prefixLen: number, routes: readonly { dst: string; gw: string }[]): Promise<void> {
  const link = await pod.getLink(ifname);
  if (!link) throw new CniError(ErrCode.KernelFailure, 'configuring the pod namespace failed', `${ifname} did not appear in the pod namespace`);
  await pod.setLink(link.index, { up: true });
  await pod.addAddress4(link.index, ip, prefixLen);
  for (const r of routes) {
    const dst = parseCidr4(r.dst);
    if (!await pod.addRoute4({ dst: formatIPv4(dst.ip), dstLen: dst.prefix, gateway: r.gw, oif: link.index })) {
      throw new CniError(ErrCode.KernelFailure, 'configuring the pod namespace failed', `the pod already has a route to ${r.dst}`);
    }
  }
}

async function cmdAdd(conf: NetConf, env: CniEnv, kernel: CniKernel): Promise<CniResult> {
  const subnetEnv = readSubnetEnv(conf);
  const plan = planNetwork(conf, subnetEnv);
  const netns = openPodNetns(kernel, env.netns);
  const store = new IpamStore(conf.dataDir);
  const hostName = hostVethName(env.containerId, env.ifname);
  let host: Rtnl | undefined;
  let pod: Rtnl | undefined;
  let ip: string | undefined;
  let vethCreated = false;
  try {
    trace('validated');
    ip = inDataDir(conf.dataDir, () => {
      ensureDataDir(conf.dataDir);
      return store.allocate({ subnet: plan.subnet, gateway: plan.gateway, reserved: plan.reserved }, env.containerId, env.ifname);
    });
    trace('allocated');
    host = kernel.hostRtnl();
    trace('netlink open');
    const bridge = await ensureBridge(host, conf, plan);
    trace('bridge ready');
    const hostMac = randomMac();
    const mac = podMac(ip);
    try {
      await host.createVeth({ name: hostName, mtu: plan.mtu, mac: macBytes(hostMac), master: bridge.index, up: true,
        peer: { name: env.ifname, netnsFd: netns.fd, mtu: plan.mtu, mac: macBytes(mac) } });
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'EEXIST') {
        throw new CniError(ErrCode.InterfaceExists, 'interface already exists',
          `${env.ifname} in ${env.netns} or host interface ${hostName} already exists`);
      }
      throw e;
    }
    vethCreated = true;
    trace('veth created');
    if (conf.hairpinMode) {
      const link = await host.getLink(hostName);
      if (link) await host.setHairpin(link.index, true);
    }
    pod = netns.rtnl();
    trace('pod socket open');
    await configurePod(pod, env.ifname, ip, plan.subnet.prefix, plan.routes);
    trace('pod side configured');
    if (plan.ipMasq) {
      await kernel.ensureMasq({ network: conf.name, podSubnet: canonicalCidr(plan.subnet), clusterNetwork: canonicalCidr(plan.clusterNetwork) },
        conf.iptablesBackend, conf.dataDir);
    }
    return buildResult(conf.cniVersion, {
      bridge: { name: conf.bridge, mac: bridge.mac },
      hostVeth: { name: hostName, mac: hostMac },
      pod: { name: env.ifname, mac, sandbox: env.netns },
      mtu: plan.mtu,
      address: formatCidr4(parseIPv4(ip), plan.subnet.prefix),
      gateway: formatIPv4(plan.gateway),
      routes: plan.routes,
      ...(conf.dns ? { dns: conf.dns } : {}),
    }, conf.prevResult);
  } catch (e) {
    // Leave nothing behind: the veth (which takes its pod end along) and the address.
    if (vethCreated && host) await host.deleteLink(hostName).catch(() => undefined);
    if (ip) store.releaseIp(ip, env.containerId, env.ifname);
    throw e;
  } finally {
    pod?.close();
    host?.close();
    netns.close();
  }
}

async function cmdDel(conf: NetConf, env: CniEnv, kernel: CniKernel): Promise<void> {
  // Deleting the host end removes the pod end too; a missing netns or link is already "deleted".
  await withHostRtnl(kernel, (nl) => nl.deleteLink(hostVethName(env.containerId, env.ifname)));
  inDataDir(conf.dataDir, () => new IpamStore(conf.dataDir).release(env.containerId, env.ifname));
}

function checkFailed(details: string): CniError {
  return new CniError(ErrCode.CheckFailed, 'attachment does not match the ADD result', details);
}

/** A list of prevResult (absent: empty) whose entries must be objects; fields are checked where read. */
function prevEntries(list: unknown, what: string): Array<Record<string, unknown>> {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw checkFailed(`prevResult ${what} is not a list`);
  list.forEach((e, i) => { if (!isRecord(e)) throw checkFailed(`prevResult ${what}[${i}] is not an object`); });
  return list as Array<Record<string, unknown>>;
}

async function cmdCheck(conf: NetConf, env: CniEnv, kernel: CniKernel): Promise<void> {
  const prev = conf.prevResult;
  if (!prev) throw invalidConfig('CHECK needs prevResult');
  const ifaces = prevEntries(prev.interfaces, 'interfaces');
  const podIndex = ifaces.findIndex((i) => i.name === env.ifname && i.sandbox);
  if (podIndex < 0) throw checkFailed(`prevResult has no interface ${env.ifname} in a sandbox`);
  const ips = prevEntries(prev.ips, 'ips');
  const mine = ips.filter((i) => i.interface === podIndex).map((i) => String(i.address));
  if (mine.length === 0) throw checkFailed(`prevResult has no address on ${env.ifname}`);

  const allocated = inDataDir(conf.dataDir, () => new IpamStore(conf.dataDir).find(env.containerId, env.ifname)).map((a) => a.ip);
  for (const a of mine) if (!allocated.includes(a.split('/')[0]!)) throw checkFailed(`${a} is not allocated to ${env.containerId}/${env.ifname}`);

  const netns = openPodNetns(kernel, env.netns);
  let pod: Rtnl | undefined;
  try {
    pod = netns.rtnl();
    const link = await pod.getLink(env.ifname);
    if (!link) throw checkFailed(`${env.ifname} is missing in ${env.netns}`);
    const have = (await pod.listAddresses4()).filter((a) => a.index === link.index).map((a) => `${a.local}/${a.prefixLen}`);
    for (const a of mine) if (!have.includes(a)) throw checkFailed(`${env.ifname} lacks ${a} (has ${have.join(', ') || 'none'})`);
    const wantMtu = ifaces[podIndex]!.mtu;
    if (wantMtu !== undefined && typeof wantMtu !== 'number') throw checkFailed(`prevResult interfaces[${podIndex}].mtu is not a number`);
    if (wantMtu && link.mtu !== wantMtu) throw checkFailed(`${env.ifname} has MTU ${link.mtu}, expected ${wantMtu}`);
    const routes = (await pod.listRoutes4()).filter((k) => k.oif === link.index && k.table === RT_TABLE_MAIN);
    for (const r of prevEntries(prev.routes, 'routes')) {
      let dst: Cidr4;
      try { dst = parseCidr4(r.dst); } catch { throw checkFailed(`prevResult route ${JSON.stringify(r.dst)} is not an IPv4 CIDR`); }
      const found = routes.some((k) => k.dstLen === dst.prefix && k.dst === formatIPv4(dst.ip) && (!r.gw || k.gateway === r.gw));
      if (!found) throw checkFailed(`route to ${String(r.dst)} is missing in the pod`);
    }
  } finally {
    pod?.close();
    netns.close();
  }

  await withHostRtnl(kernel, async (nl) => {
    const host = await nl.getLink(hostVethName(env.containerId, env.ifname));
    const br = await nl.getLink(conf.bridge);
    if (!host) throw checkFailed(`host interface ${hostVethName(env.containerId, env.ifname)} is missing`);
    if (!br || host.master !== br.index) throw checkFailed(`host interface is not on bridge ${conf.bridge}`);
  });
}

async function cmdGc(conf: NetConf, kernel: CniKernel): Promise<void> {
  if (!conf.validAttachments) throw invalidConfig('GC needs cni.dev/valid-attachments');
  const valid = new Set(conf.validAttachments.map((a) => `${a.containerID}\n${a.ifname}`));
  const validHost = new Set(conf.validAttachments.map((a) => hostVethName(a.containerID, a.ifname)));
  const store = new IpamStore(conf.dataDir);
  const records = inDataDir(conf.dataDir, () => {
    sweepStaleLocks(conf.dataDir);
    return store.list();
  });
  const errors: string[] = [];
  await withHostRtnl(kernel, async (nl) => {
    for (const a of records) {
      if (valid.has(`${a.containerId}\n${a.ifname}`)) continue;
      try {
        await nl.deleteLink(hostVethName(a.containerId, a.ifname));
        store.releaseIp(a.ip, a.containerId, a.ifname);
      } catch (e) {
        errors.push(`${a.ip}: ${(e as Error).message}`);
      }
    }
    // Host ends whose ADD died before the result: knet-named veths on the bridge nobody owns.
    const br = await nl.getLink(conf.bridge);
    if (!br) return;
    for (const l of await nl.listLinks()) {
      const name = l.name;
      if (l.master !== br.index || !/^veth[0-9a-f]{8}$/.test(name) || validHost.has(name)) continue;
      try { await nl.deleteLink(name); } catch (e) { errors.push(`${name}: ${(e as Error).message}`); }
    }
  });
  if (errors.length) throw new CniError(ErrCode.KernelFailure, 'GC could not remove everything', errors.join('; '));
}

function cmdStatus(conf: NetConf): void {
  if (conf.subnet) return;
  let text: string | null;
  try {
    text = readSubnetFile(conf.subnetFile);
    if (text !== null) parseSubnetEnv(text, conf.subnetFile);
  } catch (e) {
    throw new CniError(ErrCode.NotAvailable, 'plugin not available', e instanceof CniError ? e.details : String(e));
  }
  if (text === null) throw new CniError(ErrCode.NotAvailable, 'plugin not available', `${conf.subnetFile} does not exist yet`);
}
