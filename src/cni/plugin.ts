// The plugin's commands. Each one validates everything first, then touches IPAM and the kernel;
// a failed ADD undoes what it did (veth, allocation) before reporting the error.
import { closeSync, existsSync, readFileSync } from 'node:fs';
import { ExecError } from '../kernel/exec.ts';
import { NetlinkError, macBytes } from '../kernel/netlink/codec.ts';
import type { Rtnl } from '../kernel/netlink/rtnl.ts';
import { openNodeRtnl } from '../kernel/netlink/node-addon.ts';
import { detectIptablesBackend, ensureMasq } from '../kernel/masq.ts';
import { IpamStore, PoolExhaustedError } from '../ipam/store.ts';
import { sweepStaleLocks } from '../ipam/lockfile.ts';
import { canonicalCidr, formatCidr4, formatIPv4, parseIPv4 } from '../ipam/ipv4.ts';
import {
  SUPPORTED_VERSIONS, checkVersion, decodeStdin, parseEnv, parseNetConf, parseSubnetEnv, planNetwork,
  type CniEnv, type NetConf, type NetworkPlan, type SubnetEnv,
} from './config.ts';
import { CniError, ErrCode, invalidConfig } from './errors.ts';
import { buildResult, hostVethName, podBatch, podMac, randomMac, type CniResult } from './result.ts';
import { netnsState, openNetns, podIpBatch, podIpJson } from './podns.ts';

export interface CniOutcome { stdout: string; exitCode: number }

// KNET_CNI_TRACE=1: phase timings on stderr (stdout belongs to the runtime).
const trace = process.env.KNET_CNI_TRACE === '1'
  ? (what: string) => process.stderr.write(`knet ${(performance.now()).toFixed(1)}ms ${what}\n`)
  : () => undefined;

/** Runs one plugin invocation: stdin text and environment in, stdout text and exit code out. */
export async function runCni(stdin: string, env: NodeJS.ProcessEnv): Promise<CniOutcome> {
  let version = '1.1.0';
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
    switch (cniEnv.command) {
      case 'ADD': return ok(await cmdAdd(conf, cniEnv));
      case 'DEL': await cmdDel(conf, cniEnv); return ok();
      case 'CHECK': await cmdCheck(conf, cniEnv); return ok();
      case 'GC': await cmdGc(conf); return ok();
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
  if (e instanceof ExecError) {
    const isIpt = /iptables/.test(e.file) || e.args.some((a) => a.includes('iptables'));
    return new CniError(isIpt ? ErrCode.IptablesFailure : ErrCode.KernelFailure, isIpt ? 'iptables failed' : 'configuring the pod namespace failed', e.message);
  }
  const io = (e as NodeJS.ErrnoException)?.code;
  if (io && /^E[A-Z]+$/.test(io)) return new CniError(ErrCode.IoFailure, 'I/O failure', (e as Error).message);
  return new CniError(ErrCode.Internal, 'internal error', e instanceof Error ? e.message : String(e));
}

function readSubnetEnv(conf: NetConf): SubnetEnv | null {
  if (conf.subnet) return null;
  let text: string;
  try {
    text = readFileSync(conf.subnetFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CniError(ErrCode.TryAgainLater, 'subnet not known yet', `${conf.subnetFile} does not exist (is the overlay agent running?)`);
    }
    throw e;
  }
  return parseSubnetEnv(text);
}

async function withRtnl<T>(f: (nl: Rtnl) => Promise<T>): Promise<T> {
  const nl = openNodeRtnl();
  try {
    return await f(nl);
  } finally {
    nl.close();
  }
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

async function cmdAdd(conf: NetConf, env: CniEnv): Promise<CniResult> {
  const subnetEnv = readSubnetEnv(conf);
  const plan = planNetwork(conf, subnetEnv);
  const fd = openNetns(env.netns);
  const store = new IpamStore(conf.dataDir);
  const hostName = hostVethName(env.containerId, env.ifname);
  let ip: string | undefined;
  let vethCreated = false;
  try {
    trace('validated');
    ip = store.allocate({ subnet: plan.subnet, gateway: plan.gateway, reserved: plan.reserved }, env.containerId, env.ifname);
    const address = formatCidr4(parseIPv4(ip), plan.subnet.prefix);
    return await withRtnl(async (nl) => {
      trace('allocated, netlink open');
      const bridge = await ensureBridge(nl, conf, plan);
      trace('bridge ready');
      const hostMac = randomMac();
      const mac = podMac(ip!);
      try {
        await nl.createVeth({ name: hostName, mtu: plan.mtu, mac: macBytes(hostMac), master: bridge.index, up: true,
          peer: { name: env.ifname, netnsFd: fd, mtu: plan.mtu, mac: macBytes(mac) } });
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
        const link = await nl.getLink(hostName);
        if (link) await nl.setHairpin(link.index, true);
      }
      await podIpBatch(env.netns, podBatch(env.ifname, address, plan.routes));
      trace('pod side configured');
      if (plan.ipMasq) {
        await ensureMasq({ network: conf.name, podSubnet: canonicalCidr(plan.subnet), clusterNetwork: canonicalCidr(plan.clusterNetwork) },
          conf.iptablesBackend ?? detectIptablesBackend(), conf.dataDir);
      }
      return buildResult(conf.cniVersion, {
        bridge: { name: conf.bridge, mac: bridge.mac },
        hostVeth: { name: hostName, mac: hostMac },
        pod: { name: env.ifname, mac, sandbox: env.netns },
        mtu: plan.mtu,
        address,
        gateway: formatIPv4(plan.gateway),
        routes: plan.routes,
        ...(conf.dns ? { dns: conf.dns } : {}),
      }, conf.prevResult);
    });
  } catch (e) {
    // Leave nothing behind: the veth (which takes its pod end along) and the address.
    if (vethCreated) await withRtnl((nl) => nl.deleteLink(hostName)).catch(() => undefined);
    if (ip) store.releaseIp(ip, env.containerId, env.ifname);
    throw e;
  } finally {
    closeSync(fd);
  }
}

async function cmdDel(conf: NetConf, env: CniEnv): Promise<void> {
  // Deleting the host end removes the pod end too; a missing netns or link is already "deleted".
  await withRtnl((nl) => nl.deleteLink(hostVethName(env.containerId, env.ifname)));
  new IpamStore(conf.dataDir).release(env.containerId, env.ifname);
}

function checkFailed(details: string): CniError {
  return new CniError(ErrCode.CheckFailed, 'attachment does not match the ADD result', details);
}

async function cmdCheck(conf: NetConf, env: CniEnv): Promise<void> {
  const prev = conf.prevResult;
  if (!prev) throw invalidConfig('CHECK needs prevResult');
  const st = netnsState(env.netns);
  if (st !== 'ok') throw new CniError(ErrCode.UnknownContainer, 'container network namespace does not exist', `CNI_NETNS ${env.netns}: ${st}`);
  const ifaces = Array.isArray(prev.interfaces) ? (prev.interfaces as { name?: string; sandbox?: string; mtu?: number }[]) : [];
  const podIndex = ifaces.findIndex((i) => i.name === env.ifname && i.sandbox);
  if (podIndex < 0) throw checkFailed(`prevResult has no interface ${env.ifname} in a sandbox`);
  const ips = (Array.isArray(prev.ips) ? prev.ips : []) as { address?: string; interface?: number }[];
  const mine = ips.filter((i) => i.interface === podIndex).map((i) => String(i.address));
  if (mine.length === 0) throw checkFailed(`prevResult has no address on ${env.ifname}`);

  const allocated = new IpamStore(conf.dataDir).find(env.containerId, env.ifname).map((a) => a.ip);
  for (const a of mine) if (!allocated.includes(a.split('/')[0]!)) throw checkFailed(`${a} is not allocated to ${env.containerId}/${env.ifname}`);

  type IpAddr = { ifname: string; mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] };
  const [link] = await podIpJson<IpAddr>(env.netns, ['addr', 'show', 'dev', env.ifname]).catch(() => [] as IpAddr[]);
  if (!link) throw checkFailed(`${env.ifname} is missing in ${env.netns}`);
  const have = link.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  for (const a of mine) if (!have.includes(a)) throw checkFailed(`${env.ifname} lacks ${a} (has ${have.join(', ') || 'none'})`);
  const wantMtu = ifaces[podIndex]!.mtu;
  if (wantMtu && link.mtu !== wantMtu) throw checkFailed(`${env.ifname} has MTU ${link.mtu}, expected ${wantMtu}`);

  type IpRoute = { dst: string; gateway?: string };
  const routes = await podIpJson<IpRoute>(env.netns, ['route', 'show', 'dev', env.ifname]);
  for (const r of (Array.isArray(prev.routes) ? prev.routes : []) as { dst: string; gw?: string }[]) {
    const dst = r.dst === '0.0.0.0/0' ? 'default' : r.dst;
    if (!routes.some((k) => k.dst === dst && (!r.gw || k.gateway === r.gw))) throw checkFailed(`route to ${r.dst} is missing in the pod`);
  }

  await withRtnl(async (nl) => {
    const host = await nl.getLink(hostVethName(env.containerId, env.ifname));
    const br = await nl.getLink(conf.bridge);
    if (!host) throw checkFailed(`host interface ${hostVethName(env.containerId, env.ifname)} is missing`);
    if (!br || host.master !== br.index) throw checkFailed(`host interface is not on bridge ${conf.bridge}`);
  });
}

async function cmdGc(conf: NetConf): Promise<void> {
  if (!conf.validAttachments) throw invalidConfig('GC needs cni.dev/valid-attachments');
  const valid = new Set(conf.validAttachments.map((a) => `${a.containerID}\n${a.ifname}`));
  const validHost = new Set(conf.validAttachments.map((a) => hostVethName(a.containerID, a.ifname)));
  const store = new IpamStore(conf.dataDir);
  sweepStaleLocks(conf.dataDir);
  const errors: string[] = [];
  await withRtnl(async (nl) => {
    for (const a of store.list()) {
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
  if (!existsSync(conf.subnetFile)) {
    throw new CniError(ErrCode.NotAvailable, 'plugin not available', `${conf.subnetFile} does not exist yet`);
  }
  try {
    parseSubnetEnv(readFileSync(conf.subnetFile, 'utf8'));
  } catch (e) {
    throw new CniError(ErrCode.NotAvailable, 'plugin not available', e instanceof CniError ? e.details : String(e));
  }
}
