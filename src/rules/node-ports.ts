// nodePortAddresses as kube-proxy reads them for one IP family: the CIDRs (or "primary": the
// node's first IP of that family, unless it is loopback) that node ports accept traffic on, all
// local addresses when none applies, and the node's own addresses that fall in them. Shared by
// every data plane.
import { cidrContains, parseCIDR, parseIP, type ParsedIP } from '../util/ip.ts';
import type { ProxySettings } from './types.ts';

const LOOPBACK4 = parseCIDR('127.0.0.0/8')!;

export function isLoopback(ip: ParsedIP): boolean {
  return ip.family === 4 ? cidrContains(LOOPBACK4, ip) : ip.text === '::1';
}

export interface NodePortAddresses {
  matchAll: boolean;
  cidrs: string[];
  containsIPv4Loopback: boolean;
}

export function nodePortAddresses(settings: ProxySettings): NodePortAddresses {
  const fam = settings.family === 'IPv4' ? 4 : 6;
  const cidrs: string[] = [];
  for (const s of settings.nodePortAddresses) {
    if (s === 'primary') {
      // kube-proxy keeps one node IP per family (the first), and none when that one is loopback.
      const primary = settings.nodeIPs.map((ip) => parseIP(ip)).find((p) => p?.family === fam);
      if (primary && !isLoopback(primary)) cidrs.push(`${primary.text}/${fam === 4 ? 32 : 128}`);
      continue;
    }
    const c = parseCIDR(s.trim());
    if (c && c.family === fam) cidrs.push(c.text);
  }
  if (cidrs.length === 0) cidrs.push(fam === 4 ? '0.0.0.0/0' : '::/0');
  const matchAll = cidrs.some((c) => c === '0.0.0.0/0' || c === '::/0');
  const loop = parseIP('127.0.0.1')!;
  const containsIPv4Loopback = cidrs.some((c) => {
    const p = parseCIDR(c)!;
    return p.family === 4 && cidrContains(p, loop);
  });
  return { matchAll, cidrs: matchAll ? [fam === 4 ? '0.0.0.0/0' : '::/0'] : cidrs, containsIPv4Loopback };
}

/** Node addresses (from the interfaces) that fall in the nodePortAddresses CIDRs, first seen first. */
export function nodePortIPs(npa: NodePortAddresses, settings: ProxySettings): string[] {
  const out: string[] = [];
  for (const c of npa.cidrs) {
    const cidr = parseCIDR(c)!;
    for (const a of settings.interfaceAddresses) {
      const ip = parseIP(a.cidr.split('/')[0]);
      if (ip && cidrContains(cidr, ip) && !out.includes(ip.text)) out.push(ip.text);
    }
  }
  return out;
}
