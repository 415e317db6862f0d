// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): the fields that change the rules,
// with kube-proxy's defaults, plus the sync periods the proxy daemon uses. Like kube-proxy, the
// masquerade settings and sync periods come from the section of the mode in use (`iptables:` or
// `nftables:`), and a config its validation refuses (a bad CIDR, a non-positive sync period, a
// field of the wrong type, ...) is refused here, naming the field and its line: a mistyped config
// must never quietly mean the defaults (or, for nodePortAddresses, every address).
import { lazyModule } from '../util/lazy-module.ts';
import { parseCIDR, parseIP } from '../util/ip.ts';
import { describe, isRecord, printable } from '../model/json.ts';
import type { IpFamily, LocalDetector, ProxySettings } from './types.ts';

export interface KubeProxyConfig {
  hostnameOverride?: string;
  /** A valid IP (kube-proxy's default 0.0.0.0 when absent). */
  bindAddress?: string;
  clusterCIDR?: string;
  detectLocalMode?: string;
  detectLocal?: { bridgeInterface?: string; interfaceNamePrefix?: string; clusterCIDRs?: string[] };
  nodePortAddresses?: string[];
  masqueradeAll?: boolean;
  masqueradeBit?: number;
  localhostNodePorts?: boolean;
  syncPeriodMs: number;
  minSyncPeriodMs: number;
  /** The userspace mode's UDP flow idle timeout (kube-proxy's udpIdleTimeout, before 1.26). */
  udpIdleTimeoutMs?: number;
  /** HOST:PORT (a bare IP gets the default port, as kube-proxy's defaulting does). */
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  /** The proxy mode in use: the caller's override, else the config's `mode`, else iptables. */
  mode: ProxyMode;
  /** Fields kube-proxy does not know (it warns about them too, and goes on). */
  warnings: string[];
}

export type ProxyMode = 'iptables' | 'ipvs' | 'nftables' | 'kernelspace' | 'userspace';
const MODES: readonly ProxyMode[] = ['iptables', 'ipvs', 'nftables', 'kernelspace', 'userspace'];

/** A proxy mode from the config's `mode` (path ['mode']) or a flag (no path). */
export function proxyModeOf(v: unknown, field: string, path?: Path): ProxyMode {
  if (v === undefined || v === null || v === '') return 'iptables';
  if (typeof v !== 'string' || !(MODES as readonly string[]).includes(v)) {
    throw new ConfigError(`${field}: unknown proxy mode ${describe(v)} (${MODES.join(', ')})`, path);
  }
  return v as ProxyMode;
}

type Path = ReadonlyArray<string | number>;

/** A config that cannot be used. `path` names the field; `line`/`col` are set when known. */
export class ConfigError extends Error {
  line?: number;
  col?: number;
  constructor(message: string, readonly path?: Path) {
    super(message);
  }
}

const fieldName = (path: Path) => path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i > 0 ? `.${printable(k, 60)}` : printable(k, 60))).join('');

function fail(path: Path, message: string): never {
  throw new ConfigError(`${fieldName(path)}: ${message}`, path);
}

const NS_PER: Record<string, bigint> = { ns: 1n, us: 1000n, 'µs': 1000n, 'μs': 1000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };
const MAX_NS = (1n << 63n) - 1n;
const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';

/**
 * Go's time.ParseDuration, in milliseconds, or null when the text is not a duration: a signed
 * sequence of decimal numbers, each with a unit (ns, us, µs, ms, s, m, h), or "0"; like Go it
 * refuses anything past 2^63-1 ns (about 292 years) instead of overflowing.
 */
export function goDurationMs(text: string): number | null {
  let i = 0;
  let negative = false;
  if (text[0] === '-' || text[0] === '+') { negative = text[0] === '-'; i = 1; }
  if (text.slice(i) === '0') return 0;
  if (i === text.length) return null;
  let total = 0n;
  while (i < text.length) {
    let j = i;
    while (isDigit(text[j])) j++;
    const whole = text.slice(i, j);
    let fraction = '';
    if (text[j] === '.') {
      let k = j + 1;
      while (isDigit(text[k])) k++;
      fraction = text.slice(j + 1, k);
      j = k;
    }
    if (whole === '' && fraction === '') return null;
    let k = j;
    while (k < text.length && text[k] !== '.' && !isDigit(text[k])) k++;
    const unitName = text.slice(j, k);
    // Own keys only: "1constructor" must be an unknown unit, not Object's constructor.
    const unit = Object.hasOwn(NS_PER, unitName) ? NS_PER[unitName] : undefined;
    if (unit === undefined) return null;
    total += BigInt(whole || '0') * unit + (fraction ? (BigInt(fraction) * unit) / 10n ** BigInt(fraction.length) : 0n);
    if (total > MAX_NS) return null;
    i = k;
  }
  return (negative ? -Number(total) : Number(total)) / 1e6;
}

/** A duration field (a Go duration string, as kube-proxy's metav1.Duration wants), in ms. */
export function parseDuration(v: unknown, field: string): number {
  return durationAt(v, [field]);
}

function durationAt(v: unknown, path: Path): number {
  if (typeof v !== 'string') fail(path, `expected a duration like "30s", got ${describe(v)}`);
  const ms = goDurationMs(v);
  if (ms === null) fail(path, `invalid duration ${describe(v)} (a number with a unit: ns, us, ms, s, m, h; at most 2562047h)`);
  return ms;
}

// Typed reads: absent and null mean "not set", as in kube-proxy's decoding; any other wrong type
// is an error, as kube-proxy's (strict or lenient) decoder refuses it too.

function mapping(v: unknown, path: Path): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) fail(path, `expected a mapping, got ${describe(v)}`);
  return v;
}

function bool(v: unknown, path: Path): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') fail(path, `expected true or false, got ${describe(v)}`);
  return v;
}

function str(v: unknown, path: Path): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') fail(path, `expected a string, got ${describe(v)}`);
  return v;
}

function int(v: unknown, path: Path, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, `expected an integer, got ${describe(v)}`);
  if (v < min || v > max) fail(path, `must be within the range [${min}, ${max}], got ${v}`);
  return v;
}

function strings(v: unknown, path: Path): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(path, `expected a list, got ${describe(v)}`);
  return v.map((x, i) => (typeof x === 'string' ? x : fail([...path, i], `expected a string, got ${describe(x)}`)));
}

function optDuration(v: unknown, path: Path): number | undefined {
  return v === undefined || v === null ? undefined : durationAt(v, path);
}

/**
 * One CIDR, or two of different families (dual stack), as kube-proxy accepts for the cluster
 * CIDR; `entry` names one of them (the comma-separated clusterCIDR has no path per entry).
 */
function clusterCIDRList(list: readonly string[], path: Path, entry: (i: number) => Path): void {
  if (list.length > 2) fail(path, `only one CIDR allowed or a dual-stack pair (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48), got ${describe(list.join(','))}`);
  const families = list.map((c, i) => parseCIDR(c)?.family ?? fail(entry(i), `must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48), got ${describe(c)}`));
  if (families.length === 2 && families[0] === families[1]) fail(path, `must be a valid dual-stack CIDR pair, one IPv4 and one IPv6, got ${describe(list.join(','))}`);
}

/** kube-proxy's defaulting: a bare IP gets the default port. Then HOST:PORT with an IP and a port 1-65535. */
function hostPort(v: unknown, path: Path, defaultPort: number): string | undefined {
  const s = str(v, path);
  if (s === undefined) return undefined;
  const bare = parseIP(s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s);
  if (bare) return bare.family === 6 ? `[${bare.text}]:${defaultPort}` : `${bare.text}:${defaultPort}`;
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([0-9]+)$/.exec(s);
  if (!m) fail(path, `must be IP:port, got ${describe(s)}`);
  if (!parseIP(m[1] ?? m[2]!)) fail(path, `must be a valid IP, got ${describe(m[1] ?? m[2])}`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) fail(path, `must be a valid port, got ${describe(m[3])}`);
  return s;
}

/** The fields of each part of a KubeProxyConfiguration (v1alpha1) kube-proxy knows. */
const KNOWN_FIELDS: Record<string, readonly string[]> = {
  '': ['apiVersion', 'kind', 'featureGates', 'clientConnection', 'logging', 'hostnameOverride', 'bindAddress', 'healthzBindAddress',
    'metricsBindAddress', 'bindAddressHardFail', 'enableProfiling', 'showHiddenMetricsForVersion', 'mode', 'iptables', 'ipvs',
    'nftables', 'winkernel', 'windows', 'linux', 'detectLocalMode', 'detectLocal', 'clusterCIDR', 'nodePortAddresses',
    'oomScoreAdj', 'conntrack', 'configSyncPeriod', 'portRange', 'udpIdleTimeout', 'masqueradeAll'],
  iptables: ['masqueradeBit', 'masqueradeAll', 'localhostNodePorts', 'syncPeriod', 'minSyncPeriod'],
  nftables: ['masqueradeBit', 'masqueradeAll', 'syncPeriod', 'minSyncPeriod'],
  ipvs: ['syncPeriod', 'minSyncPeriod', 'scheduler', 'excludeCIDRs', 'strictARP', 'tcpTimeout', 'tcpFinTimeout', 'udpTimeout'],
  linux: ['masqueradeAll', 'conntrack', 'oomScoreAdj'],
  conntrack: ['maxPerCore', 'min', 'tcpEstablishedTimeout', 'tcpCloseWaitTimeout', 'tcpBeLiberal', 'udpTimeout', 'udpStreamTimeout'],
  detectLocal: ['bridgeInterface', 'interfaceNamePrefix', 'clusterCIDRs'],
  clientConnection: ['kubeconfig', 'acceptContentTypes', 'contentType', 'qps', 'burst'],
};

function unknownFields(section: Record<string, unknown>, kind: string, path: Path, warnings: string[]): void {
  const known = KNOWN_FIELDS[kind]!;
  for (const k of Object.keys(section)) if (!known.includes(k)) warnings.push(`${fieldName([...path, k])}: unknown field, ignored`);
}

const IPVS_SCHEDULERS = ['', 'rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh'];

/** A sync period section: syncPeriod > 0, 0 <= minSyncPeriod <= syncPeriod (defaults 30s and 1s). */
function syncPeriods(section: Record<string, unknown>, name: string): { syncPeriodMs: number; minSyncPeriodMs: number } {
  const syncPeriodMs = optDuration(section.syncPeriod, [name, 'syncPeriod']) ?? 30_000;
  const minSyncPeriodMs = optDuration(section.minSyncPeriod, [name, 'minSyncPeriod']) ?? 1_000;
  if (syncPeriodMs <= 0) fail([name, 'syncPeriod'], 'must be greater than 0');
  if (minSyncPeriodMs < 0) fail([name, 'minSyncPeriod'], 'must be greater than or equal to 0');
  if (minSyncPeriodMs > syncPeriodMs) fail([name, 'syncPeriod'], `must be greater than or equal to ${name}.minSyncPeriod (${minSyncPeriodMs} ms)`);
  return { syncPeriodMs, minSyncPeriodMs };
}

/** What kube-proxy's validation refuses in the parts knet does not use itself: refused here too. */
function checkUnusedParts(doc: Record<string, unknown>, linux: Record<string, unknown>, mode: ProxyMode, warnings: string[]): void {
  const gates = mapping(doc.featureGates, ['featureGates']);
  for (const [k, v] of Object.entries(gates)) if (typeof v !== 'boolean') fail(['featureGates', k], `expected true or false, got ${describe(v)}`);
  const client = mapping(doc.clientConnection, ['clientConnection']);
  unknownFields(client, 'clientConnection', ['clientConnection'], warnings);
  int(client.burst, ['clientConnection', 'burst'], 0, 2 ** 31 - 1);
  if (client.qps !== undefined && client.qps !== null && typeof client.qps !== 'number') fail(['clientConnection', 'qps'], `expected a number, got ${describe(client.qps)}`);
  for (const k of ['kubeconfig', 'acceptContentTypes', 'contentType']) str(client[k], ['clientConnection', k]);
  for (const k of ['bindAddressHardFail', 'enableProfiling']) bool(doc[k], [k]);
  mapping(doc.logging, ['logging']);
  mapping(doc.winkernel, ['winkernel']);
  mapping(doc.windows, ['windows']);
  for (const [path, v] of [[['oomScoreAdj'], doc.oomScoreAdj], [['linux', 'oomScoreAdj'], linux.oomScoreAdj]] as const) int(v, path, -1000, 1000);
  const configSync = optDuration(doc.configSyncPeriod, ['configSyncPeriod']);
  if (configSync !== undefined && configSync <= 0) fail(['configSyncPeriod'], 'must be greater than 0');
  const udpIdle = optDuration(doc.udpIdleTimeout, ['udpIdleTimeout']);
  if (udpIdle !== undefined && udpIdle <= 0) fail(['udpIdleTimeout'], 'must be greater than 0');
  const range = str(doc.portRange, ['portRange']);
  if (range !== undefined) {
    const m = /^(\d{1,5})(?:([-+])(\d{1,5}))?$/.exec(range);
    const base = Number(m?.[1]);
    const last = m?.[2] === '+' ? base + Number(m[3]) : m?.[3] !== undefined ? Number(m[3]) : base;
    if (!m || base > 65535 || last > 65535 || last < base) fail(['portRange'], `must be a valid port range (e.g. 300-2000), got ${describe(range)}`);
  }
  const hidden = str(doc.showHiddenMetricsForVersion, ['showHiddenMetricsForVersion']);
  if (hidden !== undefined && !/^\d+\.\d+$/.test(hidden)) fail(['showHiddenMetricsForVersion'], `must be a version like 1.30, got ${describe(hidden)}`);
  for (const [path, section] of [[['conntrack'], doc.conntrack], [['linux', 'conntrack'], linux.conntrack]] as const) {
    const ct = mapping(section, path);
    unknownFields(ct, 'conntrack', path, warnings);
    for (const k of ['maxPerCore', 'min', 'tcpBeLiberal']) int(ct[k], [...path, k], 0, 2 ** 31 - 1);
    for (const k of ['tcpEstablishedTimeout', 'tcpCloseWaitTimeout', 'udpTimeout', 'udpStreamTimeout']) {
      const d = optDuration(ct[k], [...path, k]);
      if (d !== undefined && d < 0) fail([...path, k], 'must be greater than or equal to 0');
    }
  }
  const ipvs = mapping(doc.ipvs, ['ipvs']);
  unknownFields(ipvs, 'ipvs', ['ipvs'], warnings);
  if (mode === 'ipvs') {
    syncPeriods(ipvs, 'ipvs');
    const scheduler = str(ipvs.scheduler, ['ipvs', 'scheduler']) ?? '';
    if (!IPVS_SCHEDULERS.includes(scheduler)) fail(['ipvs', 'scheduler'], `must be one of ${IPVS_SCHEDULERS.filter(Boolean).join(', ')} or blank, got ${describe(scheduler)}`);
    strings(ipvs.excludeCIDRs, ['ipvs', 'excludeCIDRs']).forEach((c, i) => { if (!parseCIDR(c)) fail(['ipvs', 'excludeCIDRs', i], `must be a valid CIDR, got ${describe(c)}`); });
    for (const k of ['tcpTimeout', 'tcpFinTimeout', 'udpTimeout']) {
      const d = optDuration(ipvs[k], ['ipvs', k]);
      if (d !== undefined && d < 0) fail(['ipvs', k], 'must be greater than or equal to 0');
    }
  }
}

/**
 * Parses a KubeProxyConfiguration for one proxy mode: `mode` (e.g. --proxy-mode) overrides the
 * config's own field and picks the section the masquerade settings and sync periods come from.
 * Refuses what kube-proxy's validation refuses (with the field, and with `source:line:col` when
 * the text is given); warns, as kube-proxy does, about fields it does not know.
 */
export function parseKubeProxyConfig(text: string | undefined, mode?: string, source = 'config'): KubeProxyConfig {
  if (text === undefined) return readConfig({}, mode);
  const parsed = parseConfigText(text, source);
  try {
    return readConfig(parsed.value, mode);
  } catch (e) {
    if (e instanceof ConfigError && e.path && e.line === undefined) throw parsed.locate(e);
    throw e;
  }
}

function readConfig(value: unknown, modeOverride: string | undefined): KubeProxyConfig {
  if (value !== null && value !== undefined && !isRecord(value)) {
    throw new ConfigError(`expected a KubeProxyConfiguration mapping, got ${Array.isArray(value) ? 'a list' : describe(value)}`, []);
  }
  const doc = (value ?? {}) as Record<string, unknown>;
  const warnings: string[] = [];
  if (doc.kind !== undefined && doc.kind !== 'KubeProxyConfiguration') fail(['kind'], `expected KubeProxyConfiguration, got ${describe(doc.kind)}`);
  if (doc.apiVersion !== undefined && (typeof doc.apiVersion !== 'string' || !doc.apiVersion.startsWith('kubeproxy.config.k8s.io/'))) {
    fail(['apiVersion'], `expected kubeproxy.config.k8s.io/v1alpha1, got ${describe(doc.apiVersion)}`);
  }
  unknownFields(doc, '', [], warnings);
  const effectiveMode = modeOverride !== undefined ? proxyModeOf(modeOverride, '--proxy-mode') : proxyModeOf(doc.mode, 'mode', ['mode']);
  const name = effectiveMode === 'nftables' ? 'nftables' : 'iptables';
  const iptables = mapping(doc.iptables, ['iptables']);
  const nftables = mapping(doc.nftables, ['nftables']);
  const section = name === 'nftables' ? nftables : iptables;
  unknownFields(iptables, 'iptables', ['iptables'], warnings);
  unknownFields(nftables, 'nftables', ['nftables'], warnings);
  const linux = mapping(doc.linux, ['linux']);
  unknownFields(linux, 'linux', ['linux'], warnings);
  const detectLocal = mapping(doc.detectLocal, ['detectLocal']);
  unknownFields(detectLocal, 'detectLocal', ['detectLocal'], warnings);
  // kube-proxy validates the iptables masquerade bit in every mode, the nftables one in its mode.
  const iptablesBit = int(iptables.masqueradeBit, ['iptables', 'masqueradeBit'], 0, 31);
  const nftablesBit = int(nftables.masqueradeBit, ['nftables', 'masqueradeBit'], 0, 31);
  const cfg: KubeProxyConfig = {
    mode: effectiveMode,
    masqueradeBit: (name === 'nftables' ? nftablesBit : iptablesBit) ?? 14,
    ...syncPeriods(section, name),
    warnings,
  };
  if (name === 'nftables') syncPeriods(iptables, 'iptables');
  const set = <K extends keyof KubeProxyConfig>(k: K, v: KubeProxyConfig[K] | undefined) => { if (v !== undefined) cfg[k] = v; };
  set('hostnameOverride', str(doc.hostnameOverride, ['hostnameOverride']));
  const bind = str(doc.bindAddress, ['bindAddress']);
  if (bind !== undefined && !parseIP(bind)) fail(['bindAddress'], `not a valid IP address, got ${describe(bind)}`);
  set('bindAddress', bind);
  set('healthzBindAddress', hostPort(doc.healthzBindAddress, ['healthzBindAddress'], 10256));
  set('metricsBindAddress', hostPort(doc.metricsBindAddress, ['metricsBindAddress'], 10249));
  set('udpIdleTimeoutMs', optDuration(doc.udpIdleTimeout, ['udpIdleTimeout']));
  const clusterCIDR = str(doc.clusterCIDR, ['clusterCIDR']);
  if (clusterCIDR !== undefined) clusterCIDRList(clusterCIDR.split(','), ['clusterCIDR'], () => ['clusterCIDR']);
  set('clusterCIDR', clusterCIDR);
  const localMode = str(doc.detectLocalMode, ['detectLocalMode']);
  if (localMode !== undefined && !LOCAL_MODES.includes(localMode)) fail(['detectLocalMode'], `unsupported value ${describe(localMode)} (${LOCAL_MODES.join(', ')})`);
  set('detectLocalMode', localMode);
  const npa = strings(doc.nodePortAddresses, ['nodePortAddresses']);
  npa.forEach((c, i) => {
    if (c === 'primary') { if (npa.length > 1) fail(['nodePortAddresses', i], `"primary" must be the only entry (can't use both 'primary' and CIDRs)`); }
    else if (!parseCIDR(c)) fail(['nodePortAddresses', i], `must be a valid CIDR (or "primary"), got ${describe(c)}`);
  });
  // nftables mode accepts node ports on the node's primary IPs unless told otherwise.
  set('nodePortAddresses', npa.length ? npa : effectiveMode === 'nftables' ? ['primary'] : undefined);
  set('masqueradeAll', bool(linux.masqueradeAll, ['linux', 'masqueradeAll']) ?? bool(doc.masqueradeAll, ['masqueradeAll']) ?? bool(section.masqueradeAll, [name, 'masqueradeAll']));
  if (name === 'iptables') set('localhostNodePorts', bool(iptables.localhostNodePorts, ['iptables', 'localhostNodePorts']));
  else bool(iptables.localhostNodePorts, ['iptables', 'localhostNodePorts']);
  const dl: NonNullable<KubeProxyConfig['detectLocal']> = {};
  const bridge = str(detectLocal.bridgeInterface, ['detectLocal', 'bridgeInterface']);
  const prefix = str(detectLocal.interfaceNamePrefix, ['detectLocal', 'interfaceNamePrefix']);
  const clusterCIDRs = strings(detectLocal.clusterCIDRs, ['detectLocal', 'clusterCIDRs']);
  if (clusterCIDRs.length) clusterCIDRList(clusterCIDRs, ['detectLocal', 'clusterCIDRs'], (i) => ['detectLocal', 'clusterCIDRs', i]);
  if (bridge) dl.bridgeInterface = bridge;
  if (prefix) dl.interfaceNamePrefix = prefix;
  if (clusterCIDRs.length) dl.clusterCIDRs = clusterCIDRs;
  if (localMode === 'BridgeInterface' && !bridge) fail(['detectLocal', 'bridgeInterface'], 'must not be empty with detectLocalMode BridgeInterface');
  if (localMode === 'InterfaceNamePrefix' && !prefix) fail(['detectLocal', 'interfaceNamePrefix'], 'must not be empty with detectLocalMode InterfaceNamePrefix');
  // The names end up in rules (-i NAME): only what an interface name can be.
  if (bridge && !IFACE.test(bridge)) fail(['detectLocal', 'bridgeInterface'], `not an interface name, got ${describe(bridge)}`);
  if (prefix && !IFACE.test(prefix)) fail(['detectLocal', 'interfaceNamePrefix'], `not an interface name prefix, got ${describe(prefix)}`);
  cfg.detectLocal = dl;
  checkUnusedParts(doc, linux, effectiveMode, warnings);
  return cfg;
}

const yamlPackage = lazyModule<typeof import('yaml')>('yaml');

const LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'];

/** The config text as a value, and a way to find a field's line; syntax errors carry their line. */
function parseConfigText(text: string, source: string): { value: unknown; locate: (e: ConfigError) => ConfigError } {
  // The yaml package (for its line numbers) loads only when there is a config: it costs every
  // `knet rules` ~50 ms of start-up otherwise.
  const { isNode, LineCounter, parseAllDocuments } = yamlPackage();
  const lineCounter = new LineCounter();
  const at = (e: ConfigError, offset: number) => {
    const pos = lineCounter.linePos(offset);
    const out = new ConfigError(`${source}:${pos.line}:${pos.col}: ${e.message}`, e.path);
    out.line = pos.line;
    out.col = pos.col;
    return out;
  };
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  if (list.length > 1) throw at(new ConfigError('expected one YAML document, got several'), list[1]!.range[0]);
  const doc = list[0];
  if (!doc) return { value: undefined, locate: (e) => e };
  const err = doc.errors[0];
  if (err) throw at(new ConfigError(err.message.split('\n')[0]!), err.pos[0]);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw at(new ConfigError(`cannot be read: ${(e as Error).message}`), 0);
  }
  const locate = (e: ConfigError) => {
    // The deepest part of the field's path that the text has (a default has no line of its own).
    for (let n = e.path!.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : doc.getIn(e.path!.slice(0, n), true);
      const range = (node as { range?: [number, number, number] } | undefined)?.range;
      if (isNode(node) && range) return at(e, range[0]);
    }
    return e;
  };
  return { value, locate };
}

const IFACE = /^[A-Za-z0-9_.:@+-]{1,15}$/;

/**
 * The local-traffic detector kube-proxy would build. podCIDRs are the node's (for NodeCIDR).
 * A mode whose input is missing yields 'None', as kube-proxy's no-op detector does.
 */
export function localDetectorFor(cfg: KubeProxyConfig, family: IpFamily, podCIDRs: string[] = []): LocalDetector {
  const mode = cfg.detectLocalMode || 'ClusterCIDR';
  const fam = family === 'IPv4' ? 4 : 6;
  const ofFamily = (list: string[]) => list.map((c) => parseCIDR(c.trim())).filter((c) => c && c.family === fam).map((c) => c!.text);
  switch (mode) {
    case 'ClusterCIDR': {
      const list = cfg.detectLocal?.clusterCIDRs?.length ? cfg.detectLocal.clusterCIDRs : (cfg.clusterCIDR ?? '').split(',').filter(Boolean);
      const cidrs = ofFamily(list).slice(0, 1);
      return cidrs.length ? { mode: 'ClusterCIDR', cidrs } : { mode: 'None' };
    }
    case 'NodeCIDR': {
      const cidrs = ofFamily(podCIDRs).slice(0, 1);
      return cidrs.length ? { mode: 'NodeCIDR', cidrs } : { mode: 'None' };
    }
    case 'BridgeInterface': {
      const b = cfg.detectLocal?.bridgeInterface;
      if (!b || !IFACE.test(b)) throw new ConfigError(`detectLocalMode BridgeInterface needs a valid detectLocal.bridgeInterface, got ${JSON.stringify(b)}`);
      return { mode: 'BridgeInterface', interface: b };
    }
    case 'InterfaceNamePrefix': {
      const p = cfg.detectLocal?.interfaceNamePrefix;
      if (!p || !IFACE.test(p)) throw new ConfigError(`detectLocalMode InterfaceNamePrefix needs a valid detectLocal.interfaceNamePrefix, got ${JSON.stringify(p)}`);
      return { mode: 'InterfaceNamePrefix', prefix: p };
    }
    default:
      throw new ConfigError(`unknown detectLocalMode ${JSON.stringify(mode)} (ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix)`);
  }
}

export interface SettingsInput {
  nodeName?: string;
  family?: IpFamily;
  nodeIPs?: string[];
  interfaceAddresses?: Array<{ iface: string; cidr: string }>;
  randomFully?: boolean;
  nfacctCounters?: boolean;
  podCIDRs?: string[];
}

/** Merges a parsed config with node facts into what the renderer needs. */
export function settingsFromConfig(cfg: KubeProxyConfig, input: SettingsInput): ProxySettings {
  const family = input.family ?? 'IPv4';
  const nodeIPs = (input.nodeIPs ?? []).map((s) => {
    const ip = parseIP(s);
    if (!ip) throw new ConfigError(`invalid node IP ${JSON.stringify(s)}`);
    return ip.text;
  });
  return {
    nodeName: input.nodeName ?? cfg.hostnameOverride ?? '',
    family,
    nodeIPs,
    interfaceAddresses: input.interfaceAddresses ?? [],
    localDetector: localDetectorFor(cfg, family, input.podCIDRs),
    nodePortAddresses: cfg.nodePortAddresses ?? [],
    masqueradeAll: cfg.masqueradeAll ?? false,
    masqueradeBit: cfg.masqueradeBit ?? 14,
    localhostNodePorts: cfg.localhostNodePorts ?? true,
    randomFully: input.randomFully ?? false,
    nfacctCounters: input.nfacctCounters ?? false,
    largeClusterEndpointsThreshold: 1000,
  };
}

/** The contract the proxy codes against: YAML text (or none) plus overrides; `mode` as in parseKubeProxyConfig. */
export function proxySettingsFromConfig(yamlText: string | undefined, overrides: Partial<ProxySettings> & { podCIDRs?: string[]; mode?: string }): ProxySettings {
  const cfg = parseKubeProxyConfig(yamlText, overrides.mode);
  const base = settingsFromConfig(cfg, {
    ...(overrides.nodeName !== undefined ? { nodeName: overrides.nodeName } : {}),
    ...(overrides.family !== undefined ? { family: overrides.family } : {}),
    ...(overrides.nodeIPs !== undefined ? { nodeIPs: overrides.nodeIPs } : {}),
    ...(overrides.podCIDRs !== undefined ? { podCIDRs: overrides.podCIDRs } : {}),
  });
  const { podCIDRs: _ignored, mode: _mode, ...rest } = overrides;
  return { ...base, ...rest, nodeIPs: base.nodeIPs };
}
