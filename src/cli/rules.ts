// `knet rules`: render (or explain) the iptables rules or nftables table kube-proxy would program
// for a set of Services and EndpointSlices, without touching the machine.
import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { loadManifestText, mergeManifests, ManifestSyntaxError, type LoadedManifests } from '../k8s/manifests.ts';
import { ConfigError, parseKubeProxyConfig, settingsFromConfig } from '../rules/config.ts';
import { renderIptables } from '../rules/iptables.ts';
import { buildServiceModel } from '../rules/model.ts';
import { changedServicesFromFingerprints } from '../rules/changes.ts';
import { explainRules } from '../rules/explain.ts';
import { nftablesText, renderNftables, staleChains } from '../rules/nftables.ts';
import { explainNftables } from '../rules/nftables-explain.ts';
import { parseCIDR } from '../util/ip.ts';
import { readNodeFacts } from '../k8s/node.ts';
import { printable } from '../model/json.ts';
import type { IpFamily, ProxySettings } from '../rules/types.ts';

interface RulesOptions {
  file: string[];
  config?: string;
  nodeName?: string;
  nodeIp: string[];
  ipFamily: string;
  interfaceAddress: string[];
  randomFully?: boolean;
  nfacctCounters?: boolean;
  since?: string;
  explain?: boolean;
  proxyMode?: string;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export class UsageError extends Error {}

/** A file's text; plain ASCII (what kubectl prints) skips UTF-8 decoding, half the read time of a 10k-service dump. */
function textOf(bytes: Buffer): string {
  return isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
}

function readSource(file: string): string {
  if (file === '-') return textOf(readFileSync(0));
  try {
    return textOf(readFileSync(file));
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function loadFiles(files: string[]): LoadedManifests {
  return mergeManifests(files.map((f) => loadManifestText(readSource(f), f === '-' ? '<stdin>' : f)));
}

export function settingsFromOptions(o: RulesOptions, nodes: LoadedManifests['nodes'], warn: (message: string) => void = () => {}): ProxySettings & { mode: 'iptables' | 'nftables' } {
  if (o.proxyMode !== undefined && o.proxyMode !== 'iptables' && o.proxyMode !== 'nftables') {
    throw new UsageError(`--proxy-mode must be iptables or nftables, got ${JSON.stringify(o.proxyMode)}`);
  }
  const cfg = parseKubeProxyConfig(o.config ? readSource(o.config) : undefined, o.proxyMode, o.config === '-' ? '<stdin>' : o.config);
  for (const w of cfg.warnings) warn(`${printable(o.config ?? '')}: ${w}`);
  if (o.ipFamily !== 'IPv4' && o.ipFamily !== 'IPv6') throw new UsageError(`--ip-family must be IPv4 or IPv6, got ${JSON.stringify(o.ipFamily)}`);
  const interfaceAddresses = o.interfaceAddress.map((s) => {
    const eq = s.indexOf('=');
    const iface = s.slice(0, eq);
    const cidr = s.slice(eq + 1);
    if (eq < 1 || !/^[A-Za-z0-9_.:@-]{1,15}$/.test(iface) || !parseCIDR(cidr)) throw new UsageError(`--interface-address wants IFACE=CIDR, got ${JSON.stringify(s)}`);
    return { iface, cidr };
  });
  const nodeName = o.nodeName ?? cfg.hostnameOverride ?? '';
  const node = nodes.find((n) => n.metadata.name === nodeName);
  const facts = readNodeFacts(node);
  for (const w of node ? facts.warnings : []) warn(`Node ${printable(nodeName)}: ${w}`);
  const podCIDRs = facts.podCIDRs;
  const nodeIPs = o.nodeIp.length === 0 ? facts.ips : o.nodeIp;
  const settings = settingsFromConfig(cfg, {
    nodeName, family: o.ipFamily as IpFamily, nodeIPs, interfaceAddresses,
    randomFully: !!o.randomFully, nfacctCounters: !!o.nfacctCounters, podCIDRs,
  });
  // Other modes of a config (ipvs, userspace) have no rules of their own here: iptables' are shown.
  return { ...settings, mode: cfg.mode === 'nftables' ? 'nftables' : 'iptables' };
}

/** nftables mode: the whole table after this sync (with --since: after kube-proxy's next sync). */
function runNftables(o: RulesOptions, current: LoadedManifests, settings: ProxySettings, out: (s: string | Uint8Array) => void, err: (s: string) => void): void {
  const result = renderNftables({ cluster: current.cluster, settings });
  let stale: string[] = [];
  if (o.since) stale = staleChains(renderNftables({ cluster: loadFiles([o.since]).cluster, settings }), result);
  for (const w of result.warnings) err(`knet rules: warning: ${w.object}: skipped: ${w.message}\n`);
  out(o.explain ? explainNftables(current.cluster, settings, result, stale) : nftablesText(result, stale));
}

export function runRules(o: RulesOptions, out: (s: string | Uint8Array) => void, err: (s: string) => void): number {
  try {
    if (o.file.length === 0) throw new UsageError('no input: give -f FILE (or -f - for stdin)');
    const current = loadFiles(o.file);
    for (const w of current.warnings) err(`knet rules: note: ${w}\n`);
    const { mode, ...settings } = settingsFromOptions(o, current.nodes, (w) => err(`knet rules: warning: ${w}\n`));
    if (mode === 'nftables') {
      runNftables(o, current, settings, out, err);
      return 0;
    }
    let partial: Parameters<typeof renderIptables>[0]['partial'];
    if (o.since) {
      const prev = loadFiles([o.since]);
      const prevResult = renderIptables({ cluster: prev.cluster, settings });
      const changed = changedServicesFromFingerprints(
        buildServiceModel(prev.cluster, settings).fingerprints,
        buildServiceModel(current.cluster, settings).fingerprints,
      );
      partial = { previous: prevResult.state, changedServices: changed };
    }
    const result = renderIptables({ cluster: current.cluster, settings, ...(partial ? { partial } : {}) });
    for (const w of result.warnings) err(`knet rules: warning: ${w.object}: skipped: ${w.message}\n`);
    if (o.explain) out(explainRules(current.cluster, settings, result));
    else result.writeText(out);
    return 0;
  } catch (e) {
    if (e instanceof ManifestSyntaxError) { err(`knet rules: ${e.message}\n`); return 2; }
    if (e instanceof UsageError || e instanceof ConfigError) { err(`knet rules: ${e.message}\n`); return 2; }
    throw e;
  }
}

export function registerRules(program: Command): void {
  program
    .command('rules')
    .description("print the iptables-restore input (or nftables table) kube-proxy would write for these Services and EndpointSlices (or --explain it)")
    .option('-f, --file <FILE>', 'manifest file: YAML or JSON, multi-document or kind: List; - for stdin (repeatable)', collect, [])
    .option('--config <KUBEPROXY.yaml>', 'KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1)')
    .option('--proxy-mode <MODE>', "iptables (iptables-restore input) or nftables (the whole kube-proxy table, nft -f lines); default: the config's mode, else iptables")
    .option('--node-name <NAME>', 'node to render for (default: hostnameOverride from --config)')
    .option('--node-ip <IP>', "node's primary IP (repeatable)", collect, [])
    .option('--ip-family <FAMILY>', 'IPv4 or IPv6', 'IPv4')
    .option('--interface-address <IFACE=CIDR>', "node interface address, matched by nodePortAddresses (repeatable)", collect, [])
    .option('--random-fully', 'the node\'s iptables supports MASQUERADE --random-fully')
    .option('--nfacct-counters', "kube-proxy's nfacct counters exist on the node")
    .option('--since <PREVIOUS>', "manifests of the previous sync: print kube-proxy's partial sync (nftables: the table after it, with the chains it only flushed) instead of a full one")
    .option('--explain', 'print, per service port, where a packet to each of its addresses goes, instead of rules')
    .addHelpText('after', `
Examples:
  knet rules -f examples/cluster.yaml --node-name node-1 --node-ip 192.168.50.11
  kubectl get svc,endpointslices -A -o yaml | knet rules -f - --explain
  knet rules --proxy-mode nftables -f cluster.yaml --node-name node-1 --node-ip 192.168.50.11 | nft -c -f -
Exit status: 0 rendered (objects with invalid fields are skipped with a warning), 2 unreadable or malformed input
(file:line:col), or a --config kube-proxy's validation would refuse (file:line:col and the field).`)
    .action((o: RulesOptions) => {
      process.exitCode = runRules(o, (s) => process.stdout.write(s), (s) => process.stderr.write(s));
    });
}
