// `nft -f` lines of a sync's services as one nf_tables netlink batch, the same messages nft itself
// sends for them, so the kernel ends up holding the same table. Why: every `nft` run first reads
// its cache of the whole table (one anonymous set per service chain's numgen vmap), ~0.3 s at
// 10k services whatever the transaction holds; a batch sent from the proxy's own socket skips
// that (docs/architecture.md has the figures).
//
// Pure: lines in, datagram out. Only the shapes a sync writes for services are known: chains
// added, flushed or deleted; the rules of service, external, firewall and endpoint chains (ClientIP
// affinity, the local detectors, source ranges as an anonymous interval set), with their
// comments, added, inserted first, or deleted by handle; affinity sets declared and deleted;
// elements of the verdict maps and address sets, with their comments, and those containers
// flushed. Not known: the fixed part (the table, base chains with hooks, the maps' declarations),
// a vmap too large for one attribute, an interface name of letters alone (nft may take it for a
// keyword), a source range of 0.0.0.0/0 alone; on a big-endian host the shapes whose user data or
// keys are host-order numbers (numgen vmaps, fib, affinity and interval sets). For those the
// compiler returns null and the caller runs `nft -f` instead. The encodings are nft 1.0.6's own,
// checked in test/integration/nft-batch.test.ts against what `nft -f` leaves in the kernel.
import { endianness } from 'node:os';
import { mustParseIP, parseCIDR, parseIP } from '../util/ip.ts';
import { NLA_F_NESTED, NLM_F, parseAttrs } from './netlink/codec.ts';

const NFNL_SUBSYS_NFTABLES = 10;
const MSG = { BATCH_BEGIN: 0x10, BATCH_END: 0x11, NEWCHAIN: 3, DELCHAIN: 5, NEWRULE: 6, GETRULE: 7, DELRULE: 8, NEWSET: 9, DELSET: 11, NEWSETELEM: 12, DELSETELEM: 14 } as const;
const FAMILY = { ip: 2, ip6: 10 } as const;
const VERDICT = { drop: 0, accept: 1, jump: -3, goto: -4 } as const;
const PROTO = { tcp: 6, udp: 17, sctp: 132 } as const;
// An anonymous verdict map keyed by a 32-bit host-order integer (numgen's result): flags
// anonymous | constant | map, nft's "integer" key type, and nft's user data for it.
const ANON_MAP_FLAGS = 0x0b;
const INTEGER_TYPE = 4;
const VERDICT_TYPE = 0xffffff00;
const ANON_MAP_USERDATA = Buffer.from('00040100000001040000000004080004010000000100060400000000', 'hex');

// A ClientIP affinity set: flags timeout | eval (nft's "dynamic,timeout"), the family's address
// type (ipv4_addr, ipv6_addr) and length, and nft's user data for it (the key is big-endian; the
// user data's numbers are in host order, little-endian here, as are the interval sets' below).
const AFFINITY_SET_FLAGS = 0x30;
const ADDR_TYPE = { ip: 7, ip6: 8 } as const;
const ADDR_LEN = { ip: 4, ip6: 16 } as const;
const AFFINITY_SET_USERDATA = Buffer.from('000402000000', 'hex');
// A LoadBalancer's source ranges: an anonymous constant interval set of addresses (nft's flags
// and user data: big-endian key, merged elements, typeof the family's saddr), looked up inverted.
const ANON_INTERVAL_FLAGS = 0x07;
const INTERVAL_SET_USERDATA = {
  ip: Buffer.from('000402000000020401000000031400040700000001' + '0c00040c00000001040b000000', 'hex'),
  ip6: Buffer.from('000402000000020401000000031400040700000001' + '0c00040d000000010408000000', 'hex'),
} as const;
const SET_ELEM_INTERVAL_END = 1;
/** An interval running to the last address: its start's user data says it is open. */
const INTERVAL_OPEN_USERDATA = Buffer.from('010401000000', 'hex');
const LOOKUP_F_INV = 1;
const META_IIFNAME = 6;
// fib: look up the source address, give its type (RTN_LOCAL: one of the node's own).
const FIB_F_SADDR = 1;
const FIB_RESULT_ADDRTYPE = 3;
const RTN_LOCAL = 2;

type FamilyName = keyof typeof FAMILY;
/** A netlink attribute: a leaf value, or nested attributes (sent with NLA_F_NESTED). */
type Attr = [type: number, value: Buffer | Attr[]];

/**
 * Messages written one after another into one growing buffer, each nested attribute's length
 * filled in once its contents are written. Why: a full sync's batches hold millions of
 * attributes (10k services: 37 MB); a Buffer per attribute and a concat per nesting level took
 * 2.3 s and tens of MB of short-lived buffers (the proxy's peak RSS went past 170 MB).
 */
class MessageWriter {
  private buf: Buffer;
  at = 0;

  /** sizeHint: the bytes expected, so that a large batch is not copied as it grows. */
  constructor(sizeHint = 1 << 12) {
    this.buf = Buffer.allocUnsafe(sizeHint);
  }

  private reserve(n: number): void {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }

  // Byte by byte below: Buffer's copy and write methods check their arguments on every call,
  // which cost more than the copying of these few bytes.
  private attrs(list: readonly Attr[]): void {
    for (const [type, value] of list) {
      const start = this.at;
      this.reserve(8);
      this.at += 4;
      const nested = Array.isArray(value);
      if (nested) this.attrs(value);
      else {
        const n = value.length;
        this.reserve(n + 3);
        const buf = this.buf;
        if (n <= 32) for (let i = 0; i < n; i++) buf[this.at + i] = value[i]!;
        else buf.set(value, this.at);
        this.at += n;
      }
      const buf = this.buf;
      const len = this.at - start;
      // The length field has 16 bits: a longer attribute (a vmap of ~650 endpoints or more) is
      // not this compiler's to send; nft splits such element lists over several messages.
      if (len > 0xffff) throw tooLong;
      const t = nested ? type | NLA_F_NESTED : type;
      buf[start] = len & 255;
      buf[start + 1] = len >>> 8;
      buf[start + 2] = t & 255;
      buf[start + 3] = t >>> 8;
      // Padding to 4 bytes (room for it was reserved with the value).
      while (this.at & 3) buf[this.at++] = 0;
    }
  }

  /** A netfilter message: the netlink header, nfgenmsg (family, version 0, resource id), attributes. Returns where it starts. */
  message(type: number, flags: number, seq: number, family: number, resId: number, attrs: readonly Attr[]): number {
    const start = this.at;
    this.reserve(20);
    this.buf.writeUInt16LE(type, start + 4);
    this.buf.writeUInt16LE(flags, start + 6);
    this.buf.writeUInt32LE(seq, start + 8);
    this.buf.writeUInt32LE(0, start + 12); // port id: the kernel's
    this.buf.writeUInt8(family, start + 16);
    this.buf.writeUInt8(0, start + 17);
    this.buf.writeUInt16BE(resId, start + 18);
    this.at += 20;
    this.attrs(attrs);
    this.buf.writeUInt32LE(this.at - start, start);
    return start;
  }

  /** Adds flags to the message written at `start`. */
  addFlags(start: number, flags: number): void {
    this.buf.writeUInt16LE(this.buf.readUInt16LE(start + 6) | flags, start + 6);
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.at);
  }
}

/** Thrown by MessageWriter for an attribute over 64 KiB; compileNftBatch then declines the transaction. */
class AttributeTooLong extends Error {}
const tooLong = new AttributeTooLong('netlink attribute over 64 KiB');

/** Small constants (verdict codes, registers, lengths) are encoded once. */
const BE32 = new Map<number, Buffer>();
const be32 = (n: number) => {
  let b = BE32.get(n);
  if (!b) {
    b = Buffer.allocUnsafe(4);
    b.writeInt32BE(n | 0, 0);
    if (n >= -8 && n < 256) BE32.set(n, b);
  }
  return b;
};
const str = (s: string) => Buffer.from(`${s}\0`, 'latin1');

/** One netfilter message on its own. */
function message(type: number, flags: number, seq: number, family: number, resId: number, attrs: readonly Attr[]): Buffer {
  const w = new MessageWriter();
  w.message(type, flags, seq, family, resId, attrs);
  return w.bytes();
}

const expr = (name: string, data: Attr[]): Attr => [1, [[1, str(name)], [2, data]]];
const payload = (offset: number, len: number): Attr => expr('payload', [[1, be32(1)], [2, be32(1)], [3, be32(offset)], [4, be32(len)]]);
const cmp = (op: 'eq' | 'neq', value: Buffer): Attr => expr('cmp', [[1, be32(1)], [2, be32(op === 'eq' ? 0 : 1)], [3, [[1, value]]]]);
const verdictData = (v: Verdict): Attr[] => [[1, be32(VERDICT[v.kind])], ...(v.chain !== undefined ? [[2, str(v.chain)] as Attr] : [])];
const verdictExpr = (v: Verdict): Attr => expr('immediate', [[1, be32(0)], [2, [[2, verdictData(v)]]]]);

interface Verdict { kind: keyof typeof VERDICT; chain?: string }

// Names the renderer makes: chain, set and map names (kube-proxy's hashes, service and port
// names, addresses with ':' written as '.').
const NAME = /^[A-Za-z0-9][A-Za-z0-9_./:-]{0,255}$/;

function verdictOf(text: string): Verdict | null {
  if (text === 'drop' || text === 'accept') return { kind: text };
  const m = /^(jump|goto) (\S+)$/.exec(text);
  return m && NAME.test(m[2]!) ? { kind: m[1] as 'jump' | 'goto', chain: m[2]! } : null;
}

/** An address of the table's family as bytes, or null. */
function addressBytes(family: FamilyName, text: string): Buffer | null {
  const ip = (() => { try { return mustParseIP(text, { syntax: 'strict', family: family === 'ip' ? 4 : 6 }); } catch { return null; } })();
  return ip ? valueBytes(family, ip.value) : null;
}

/** An address of the family, given as its number, in network order. */
function valueBytes(family: FamilyName, value: bigint): Buffer {
  return Buffer.from(family === 'ip' ? formatIPv4Bytes(Number(value)) : ipv6Bytes(value));
}

function formatIPv4Bytes(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function ipv6Bytes(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 15; i >= 0; i--) out.push(Number((v >> BigInt(i * 8)) & 0xffn));
  return out;
}

/** `ipX saddr|daddr` compared with an address (`eq`) or outside a prefix (`neq` CIDR), as nft encodes it. */
function addressMatch(family: FamilyName, field: 'saddr' | 'daddr', op: 'eq' | 'neq', text: string): Attr[] | null {
  const width = family === 'ip' ? 4 : 16;
  const offset = family === 'ip' ? (field === 'saddr' ? 12 : 16) : (field === 'saddr' ? 8 : 24);
  if (!text.includes('/')) {
    const bytes = addressBytes(family, text);
    return bytes ? [payload(offset, width), cmp(op, bytes)] : null;
  }
  const cidr = parseCIDR(text);
  if (!cidr || cidr.family !== (family === 'ip' ? 4 : 6)) return null;
  const [addrText, lenText] = text.split('/') as [string, string];
  const prefix = Number(lenText);
  const bytes = addressBytes(family, addrText);
  if (!bytes || !Number.isInteger(prefix) || prefix < 1) return null;
  const mask = Buffer.alloc(width);
  for (let i = 0; i < width; i++) mask[i] = prefix >= (i + 1) * 8 ? 255 : prefix <= i * 8 ? 0 : (0xff << (8 - (prefix - i * 8))) & 255;
  const network = Buffer.from(bytes.map((b, i) => b & mask[i]!));
  if (!network.equals(bytes)) return null; // host bits set: the renderer never writes that
  // nft compares the leading bytes of a byte-aligned prefix, and masks the whole address otherwise.
  if (prefix === width * 8) return [payload(offset, width), cmp(op, network)];
  if (prefix % 8 === 0) return [payload(offset, prefix / 8), cmp(op, network.subarray(0, prefix / 8))];
  return [payload(offset, width), expr('bitwise', [[1, be32(1)], [2, be32(1)], [3, be32(width)], [4, [[1, mask]]], [5, [[1, Buffer.alloc(width)]]]]), cmp(op, network)];
}

/**
 * An interface name as nft compares it: the whole 16-byte name, NUL-padded, or for `prefix*` the
 * prefix alone. Plain names only; anything nft might read otherwise is left to it.
 */
function ifnameBytes(text: string): Buffer | null {
  // nft refuses an unquoted name that starts with a digit or '-', or that is one of its keywords
  // (bridge, inet, mark...): such names, and every name of letters alone, are left to nft.
  const m = /^([A-Za-z_][A-Za-z0-9_-]{0,14})(\*?)$/.exec(text);
  if (!m || (!m[2] && /^[A-Za-z]+$/.test(m[1]!))) return null;
  if (m[2]) return Buffer.from(m[1]!, 'latin1');
  const out = Buffer.alloc(16);
  out.write(m[1]!, 'latin1');
  return out;
}

/** A comment as an element's or a rule's user data: nft's TLV (type 0, length, text with its NUL). */
const commentData = (text: string) => Buffer.concat([Buffer.from([0, text.length + 1]), str(text)]);

/** A named set by name, with the id of its NEWSET when this batch makes it (the kernel finds a set by name first). */
function namedSetAttrs(name: string, nameType: number, idType: number, idOf: (set: string) => number | undefined): Attr[] | null {
  if (!NAME.test(name)) return null;
  const id = idOf(name);
  return [[nameType, str(name)], ...(id === undefined ? [] : [[idType, be32(id)] as Attr])];
}

/** The sets a rule's expressions refer to: made in the batch before the rule, or named. */
interface RuleSets {
  /** An anonymous verdict map keyed by numgen's result. */
  vmap(entries: Verdict[]): { name: string; id: number };
  /** An anonymous set of address intervals (start inclusive, end exclusive, merged, in order). */
  intervals(list: Array<[bigint, bigint]>): { name: string; id: number };
  /** The id of a named set this batch declares. */
  namedId(set: string): number | undefined;
}

/**
 * Source addresses and CIDRs as nft keeps them in an interval set: [start, end) ranges, sorted,
 * overlapping and adjacent ones merged (nft's auto-merge); null if one is not of the family.
 */
export function sourceIntervals(family: FamilyName, entries: readonly string[]): Array<[bigint, bigint]> | null {
  const bits = family === 'ip' ? 32 : 128;
  const ranges: Array<[bigint, bigint]> = [];
  for (const entry of entries) {
    const cidr = entry.includes('/') ? parseCIDR(entry, 'strict') : null;
    const ip = cidr ? null : parseIP(entry, 'strict');
    const range = cidr ?? ip;
    // Host bits set: the renderer never writes that.
    if (!range || range.family !== (family === 'ip' ? 4 : 6) || (cidr && cidr.address !== cidr.value)) return null;
    ranges.push([range.value, range.value + (1n << BigInt(bits - (cidr ? cidr.prefix : bits)))]);
  }
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Array<[bigint, bigint]> = [];
  for (const r of ranges) {
    const last = merged.at(-1);
    if (last && r[0] <= last[1]) { if (r[1] > last[1]) last[1] = r[1]; } else merged.push([r[0], r[1]]);
  }
  return merged;
}

/** The expressions of one rule, or null when its shape is not one this compiler knows. */
function ruleExpressions(family: FamilyName, rule: string, sets: RuleSets): Attr[] | null {
  const ipX = family === 'ip' ? 'ip' : 'ip6';
  const saddr = () => payload(family === 'ip' ? 12 : 8, ADDR_LEN[family]);
  let m: RegExpExecArray | null;
  // (jump|goto) CHAIN
  let v = verdictOf(rule);
  if (v && v.chain) return [verdictExpr(v)];
  // ipX saddr @SET (jump|goto) CHAIN: a client with affinity goes back to its endpoint
  if ((m = new RegExp(`^${ipX} saddr @(\\S+) ((?:jump|goto) \\S+)$`).exec(rule))) {
    const set = namedSetAttrs(m[1]!, 1, 4, sets.namedId);
    v = verdictOf(m[2]!);
    return set && v ? [saddr(), expr('lookup', [[2, be32(1)], ...set]), verdictExpr(v)] : null;
  }
  // update @SET { ipX saddr }: the client's affinity to this endpoint, refreshed
  if ((m = new RegExp(`^update @(\\S+) \\{ ${ipX} saddr \\}$`).exec(rule))) {
    const set = namedSetAttrs(m[1]!, 1, 2, sets.namedId);
    return set ? [saddr(), expr('dynset', [[4, be32(1)], [3, be32(1)], ...set])] : null;
  }
  // ipX daddr ADDR iifname != NAME (jump|goto) CHAIN, iifname NAME (jump|goto) CHAIN: the
  // bridge and interface-prefix local detectors
  if ((m = new RegExp(`^(?:${ipX} daddr (\\S+) )?iifname (!= )?(\\S+) ((?:jump|goto) \\S+)$`).exec(rule))) {
    const dst = m[1] === undefined ? [] : m[1].includes('/') ? null : addressMatch(family, 'daddr', 'eq', m[1]);
    const name = ifnameBytes(m[3]!);
    v = verdictOf(m[4]!);
    // The daddr form only with !=, the bare one only with = (the shapes the renderer writes).
    if (!dst || !name || !v || (m[1] === undefined) === (m[2] !== undefined)) return null;
    return [...dst, expr('meta', [[2, be32(META_IIFNAME)], [1, be32(1)]]), cmp(m[2] ? 'neq' : 'eq', name), verdictExpr(v)];
  }
  // ipX saddr != { ADDR|CIDR , ... } drop: a LoadBalancer's source ranges
  if ((m = new RegExp(`^${ipX} saddr != \\{ (.+) \\} drop$`).exec(rule))) {
    const entries = m[1]!.split(' , ');
    // nft compares against a set of one directly; addresses alone make it a plain set, not
    // intervals (the renderer writes ranges as CIDRs: that is left to nft).
    if (entries.length === 1) {
      const match = addressMatch(family, 'saddr', 'neq', entries[0]!);
      return match ? [...match, verdictExpr({ kind: 'drop' })] : null;
    }
    if (!entries.some((e) => e.includes('/')) || endianness() !== 'LE') return null;
    const list = sourceIntervals(family, entries);
    if (!list || list.length === 0) return null;
    const set = sets.intervals(list);
    return [saddr(), expr('lookup', [[2, be32(1)], [1, str(set.name)], [4, be32(set.id)], [5, be32(LOOKUP_F_INV)]]), verdictExpr({ kind: 'drop' })];
  }
  // ipX saddr ADDR|CIDR (jump|goto) CHAIN (a CIDR: traffic from pods, the local detector)
  if ((m = new RegExp(`^${ipX} saddr (\\S+) ((?:jump|goto) \\S+)$`).exec(rule))) {
    const match = addressMatch(family, 'saddr', 'eq', m[1]!);
    v = verdictOf(m[2]!);
    return match && v ? [...match, verdictExpr(v)] : null;
  }
  // fib saddr type local (jump|goto) CHAIN: traffic from the node itself (the address type is
  // compared in host order: a big-endian host leaves this to nft)
  if ((m = /^fib saddr type local ((?:jump|goto) \S+)$/.exec(rule)) && endianness() === 'LE') {
    v = verdictOf(m[1]!);
    return v ? [expr('fib', [[3, be32(FIB_F_SADDR)], [2, be32(FIB_RESULT_ADDRTYPE)], [1, be32(1)]]), cmp('eq', Buffer.from([RTN_LOCAL, 0, 0, 0])), verdictExpr(v)] : null;
  }
  // ipX daddr ADDR ipX saddr != CIDR (jump|goto) CHAIN
  if ((m = new RegExp(`^${ipX} daddr (\\S+) ${ipX} saddr != (\\S+/\\d+) ((?:jump|goto) \\S+)$`).exec(rule))) {
    const dst = m[1]!.includes('/') ? null : addressMatch(family, 'daddr', 'eq', m[1]!);
    const src = addressMatch(family, 'saddr', 'neq', m[2]!);
    v = verdictOf(m[3]!);
    return dst && src && v ? [...dst, ...src, verdictExpr(v)] : null;
  }
  // meta l4proto P dnat to ADDR:PORT ([ADDR]:PORT for IPv6)
  if ((m = (family === 'ip' ? /^meta l4proto (tcp|udp|sctp) dnat to ([0-9.]+):(\d+)$/ : /^meta l4proto (tcp|udp|sctp) dnat to \[([0-9a-fA-F:.]+)\]:(\d+)$/).exec(rule))) {
    const addr = addressBytes(family, m[2]!);
    const port = Number(m[3]);
    if (!addr || !Number.isInteger(port) || port < 1 || port > 65535) return null;
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16BE(port, 0);
    return [
      expr('meta', [[2, be32(0x10)], [1, be32(1)]]),
      cmp('eq', Buffer.from([PROTO[m[1] as keyof typeof PROTO]])),
      expr('immediate', [[1, be32(1)], [2, [[1, addr]]]]),
      expr('immediate', [[1, be32(2)], [2, [[1, portBytes]]]]),
      expr('nat', [[1, be32(1)], [2, be32(FAMILY[family])], [3, be32(1)], [5, be32(2)], [7, be32(2)]]),
    ];
  }
  // numgen random mod N vmap { 0 : goto A , 1 : goto B ... } (its keys are in host order,
  // written little-endian below: a big-endian host leaves this to nft)
  if ((m = /^numgen random mod (\d+) vmap \{ (.+) \}$/.exec(rule)) && endianness() === 'LE') {
    const n = Number(m[1]);
    const entries = m[2]!.split(' , ');
    if (!Number.isInteger(n) || n < 1 || entries.length !== n) return null;
    const verdicts: Verdict[] = [];
    for (const [i, e] of entries.entries()) {
      const em = /^(\d+) : ((?:jump|goto) \S+)$/.exec(e);
      const ev = em && Number(em[1]) === i ? verdictOf(em[2]!) : null;
      if (!ev) return null;
      verdicts.push(ev);
    }
    const set = sets.vmap(verdicts);
    return [
      expr('numgen', [[1, be32(1)], [2, be32(n)], [3, be32(1)], [4, be32(0)]]),
      expr('lookup', [[2, be32(1)], [3, be32(0)], [1, str(set.name)], [4, be32(set.id)]]),
    ];
  }
  return null;
}

// The maps and sets of kube-proxy's table a sync writes elements to, by key shape.
const ELEMENT_KEYS: Record<string, 'addr' | 'addr-proto-port' | 'proto-port'> = {
  'cluster-ips': 'addr', 'nodeport-ips': 'addr',
  'service-ips': 'addr-proto-port', 'firewall-ips': 'addr-proto-port', 'no-endpoint-services': 'addr-proto-port',
  'service-nodeports': 'proto-port', 'no-endpoint-nodeports': 'proto-port',
};

/** An element key as the kernel holds it: each part padded to 4 bytes, as in a concatenation. */
function elementKey(family: FamilyName, shape: 'addr' | 'addr-proto-port' | 'proto-port', text: string): Buffer | null {
  const parts = text.split(' . ');
  const out: Buffer[] = [];
  const want = shape === 'addr' ? ['addr'] : shape === 'proto-port' ? ['proto', 'port'] : ['addr', 'proto', 'port'];
  if (parts.length !== want.length) return null;
  for (const [i, kind] of want.entries()) {
    const p = parts[i]!;
    if (kind === 'addr') {
      const b = addressBytes(family, p);
      if (!b) return null;
      out.push(b);
    } else if (kind === 'proto') {
      const proto = PROTO[p as keyof typeof PROTO];
      if (proto === undefined || !Object.hasOwn(PROTO, p)) return null;
      out.push(Buffer.from([proto, 0, 0, 0]));
    } else {
      const port = /^\d{1,5}$/.test(p) ? Number(p) : NaN;
      if (!(port >= 1 && port <= 65535)) return null;
      const b = Buffer.alloc(4);
      b.writeUInt16BE(port, 0);
      out.push(b);
    }
  }
  return Buffer.concat(out);
}

/** A set's declaration or its elements, sent before the rule that uses it. */
type SetMessage = [type: number, attrs: Attr[]];
/** nft's names for a rule's anonymous sets (the kernel numbers them). */
const ANON_MAP = '__map%d';
const ANON_SET = '__set%d';

/** A ClientIP affinity set: addresses of the family, added by the rules with this timeout. */
function affinitySetAttrs(family: FamilyName, tableAttr: Attr, name: string, id: number, timeoutSeconds: number): Attr[] {
  const timeout = Buffer.alloc(8);
  timeout.writeBigUInt64BE(BigInt(timeoutSeconds * 1000), 0);
  return [
    tableAttr, [2, str(name)], [3, be32(AFFINITY_SET_FLAGS)], [4, be32(ADDR_TYPE[family])], [5, be32(ADDR_LEN[family])],
    [10, be32(id)], [11, timeout], [13, AFFINITY_SET_USERDATA],
  ];
}

/** An anonymous verdict map keyed by numgen's result (0, 1, ...): its declaration and elements. */
function anonVmapMessages(tableAttr: Attr, id: number, verdicts: readonly Verdict[]): SetMessage[] {
  const elements: Attr[] = verdicts.map((v, i) => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(i, 0); // numgen's result in host order (little-endian here)
    // nft numbers the list's entries 1, 2, ... (the kernel reads any type here).
    return [i + 1, [[1, [[1, key]]], [2, [[2, verdictData(v)]]]]];
  });
  return [
    [MSG.NEWSET, [
      tableAttr, [2, str(ANON_MAP)], [3, be32(ANON_MAP_FLAGS)], [4, be32(INTEGER_TYPE)], [5, be32(4)], [6, be32(VERDICT_TYPE)], [7, be32(0)],
      [10, be32(id)], [9, [[1, be32(verdicts.length)]]], [13, ANON_MAP_USERDATA],
    ]],
    [MSG.NEWSETELEM, [tableAttr, [2, str(ANON_MAP)], [4, be32(id)], [3, elements]]],
  ];
}

/** An anonymous constant set of address intervals (sourceIntervals' list): its declaration and elements. */
function anonIntervalMessages(family: FamilyName, tableAttr: Attr, id: number, list: ReadonlyArray<[bigint, bigint]>): SetMessage[] {
  const width = ADDR_LEN[family];
  const keyOf = (n: bigint) => valueBytes(family, n);
  const max = 1n << BigInt(width * 8);
  // nft's interval encoding: an end marker at 0 unless a range starts there, then each range's
  // start and its (exclusive) end flagged INTERVAL_END; a range that runs to the last address
  // has no end, its start says so in its user data.
  const elements: Attr[][] = [];
  if (list[0]![0] !== 0n) elements.push([[3, be32(SET_ELEM_INTERVAL_END)], [1, [[1, keyOf(0n)]]]]);
  for (const [start, end] of list) {
    if (end === max) elements.push([[1, [[1, keyOf(start)]]], [6, INTERVAL_OPEN_USERDATA]]);
    else elements.push([[1, [[1, keyOf(start)]]]], [[3, be32(SET_ELEM_INTERVAL_END)], [1, [[1, keyOf(end)]]]]);
  }
  // The declared size: two per range (an open one too), and the marker at 0.
  const size = 2 * list.length + (list[0]![0] !== 0n ? 1 : 0);
  return [
    [MSG.NEWSET, [
      tableAttr, [2, str(ANON_SET)], [3, be32(ANON_INTERVAL_FLAGS)], [4, be32(ADDR_TYPE[family])], [5, be32(width)],
      [10, be32(id)], [9, [[1, be32(size)]]], [13, INTERVAL_SET_USERDATA[family]],
    ]],
    [MSG.NEWSETELEM, [tableAttr, [2, str(ANON_SET)], [4, be32(id)], [3, elements.map((e, i): Attr => [i + 1, e])]]],
  ];
}

/**
 * One transaction's lines as a netlink batch (sequence numbers from `firstSeq`), or null when a
 * line is not one this compiler knows.
 */
export function compileNftBatch(lines: readonly string[], firstSeq: number): NftBatch | null {
  try {
    return compileLines(lines, firstSeq);
  } catch (e) {
    if (e === tooLong) return null;
    throw e;
  }
}

function compileLines(lines: readonly string[], firstSeq: number): NftBatch | null {
  // Most lines take 100-250 bytes (a service chain's vmap rule brings its set): one doubling at
  // most; no more than the largest batch a socket takes to begin with.
  const w = new MessageWriter(Math.min(8 << 20, Math.max(1 << 12, lines.length * 128)));
  const lineOf: string[] = [];
  let seq = firstSeq;
  let setId = 0;
  /** Affinity sets this batch declares, by name: their NEWSET's id. */
  const namedSetIds = new Map<string, number>();
  let family: FamilyName | null = null;
  const table = 'kube-proxy';
  let current = '';
  let lastCommand = -1;
  const push = (type: number, flags: number, attrs: Attr[]) => {
    lastCommand = w.message((NFNL_SUBSYS_NFTABLES << 8) | type, flags | NLM_F.REQUEST, seq++, FAMILY[family!], 0, attrs);
    lineOf.push(current);
  };
  const begin = seq++;
  w.message(MSG.BATCH_BEGIN, NLM_F.REQUEST, begin, 0, NFNL_SUBSYS_NFTABLES, []);
  for (const line of lines) {
    if (line === '') continue;
    current = line;
    const m = /^(add|insert|flush|delete) (chain|rule|element|set|map) (ip6?) kube-proxy (\S+)(?: (.*))?$/.exec(line);
    if (!m) return null;
    const [, verb, what, fam, name, rest] = m as unknown as [string, string, string, FamilyName, string, string | undefined];
    if (family !== null && fam !== family) return null;
    family = fam;
    if (!NAME.test(name)) return null;
    const tableAttr: Attr = [1, str(table)];
    if (verb === 'insert' && what !== 'rule') return null;
    if (what === 'set' && verb !== 'flush' && !Object.hasOwn(ELEMENT_KEYS, name)) {
      // ClientIP affinity sets: declared, or deleted once no rule uses them.
      if (verb === 'delete' && rest === undefined) {
        push(MSG.DELSET, 0, [tableAttr, [2, str(name)]]);
        namedSetIds.delete(name);
        continue;
      }
      // Its user data holds a host-order number (the key's byte order): little-endian hosts only.
      const sm = verb === 'add' && rest !== undefined && endianness() === 'LE' ? /^\{ type (ipv4_addr|ipv6_addr) ; flags dynamic,timeout ; timeout ([1-9]\d{0,5})s ; \}$/.exec(rest) : null;
      if (!sm || sm[1] !== (fam === 'ip' ? 'ipv4_addr' : 'ipv6_addr')) return null;
      const id = ++setId;
      namedSetIds.set(name, id);
      push(MSG.NEWSET, NLM_F.CREATE, affinitySetAttrs(fam, tableAttr, name, id, Number(sm[2])));
    } else if (what === 'set' || what === 'map') {
      // Only flushing one of the table's element containers (a full sync refills them).
      const shape = Object.hasOwn(ELEMENT_KEYS, name) ? ELEMENT_KEYS[name]! : null;
      if (verb !== 'flush' || rest !== undefined || !shape || (shape === 'addr') !== (what === 'set')) return null;
      // A DELSETELEM without elements flushes the set.
      push(MSG.DELSETELEM, 0, [tableAttr, [2, str(name)]]);
    } else if (what === 'chain') {
      if (rest !== undefined) return null; // base chains and comments: nft's
      if (verb === 'add') push(MSG.NEWCHAIN, NLM_F.CREATE, [tableAttr, [3, str(name)]]);
      else if (verb === 'flush') push(MSG.DELRULE, 0, [tableAttr, [2, str(name)]]);
      else push(MSG.DELCHAIN, 0, [tableAttr, [3, str(name)]]);
    } else if (what === 'rule' && verb === 'delete') {
      // delete rule ... CHAIN handle N
      const hm = rest === undefined ? null : /^handle ([1-9]\d{0,18})$/.exec(rest);
      if (!hm || BigInt(hm[1]!) >= 2n ** 63n) return null;
      const handle = Buffer.alloc(8);
      handle.writeBigUInt64BE(BigInt(hm[1]!), 0);
      push(MSG.DELRULE, 0, [tableAttr, [2, str(name)], [3, handle]]);
    } else if (what === 'rule') {
      if ((verb !== 'add' && verb !== 'insert') || rest === undefined) return null;
      // A trailing comment is the rule's user data, as for elements.
      const cm = / comment "([^"\\]*)"$/.exec(rest);
      if (cm && (cm[1]!.length > 128 || /[^\x20-\x7e]/.test(cm[1]!))) return null;
      const body = cm ? rest.slice(0, cm.index) : rest;
      // The rule's anonymous set and its elements go first, once the rule is known to compile.
      const sets: SetMessage[] = [];
      const anonymous = (messages: (id: number) => SetMessage[], name: string) => {
        const id = ++setId;
        sets.push(...messages(id));
        return { name, id };
      };
      const exprs = ruleExpressions(fam, body, {
        vmap: (verdicts) => anonymous((id) => anonVmapMessages(tableAttr, id, verdicts), ANON_MAP),
        intervals: (list) => anonymous((id) => anonIntervalMessages(fam, tableAttr, id, list), ANON_SET),
        namedId: (set) => namedSetIds.get(set),
      });
      if (!exprs) return null;
      for (const [type, attrs] of sets) push(type, NLM_F.CREATE, attrs);
      // `insert` puts the rule first in its chain: the same message without APPEND.
      push(MSG.NEWRULE, verb === 'add' ? NLM_F.CREATE | NLM_F.APPEND : NLM_F.CREATE, [tableAttr, [2, str(name)], [4, exprs], ...(cm ? [[7, commentData(cm[1]!)] as Attr] : [])]);
    } else {
      if (verb === 'flush') return null;
      const shape = Object.hasOwn(ELEMENT_KEYS, name) ? ELEMENT_KEYS[name]! : null;
      const em = rest === undefined ? null : /^\{ (.+?)(?: comment "([^"\\]*)")?(?: : (.+))? \}$/.exec(rest);
      if (!shape || !em) return null;
      const key = elementKey(fam, shape, em[1]!);
      const comment = em[2];
      if (!key || (comment !== undefined && (verb !== 'add' || comment.length > 128))) return null; // nft's own limit: longer is its error to report
      const isMap = shape !== 'addr';
      const data: Attr[] = [];
      if (verb === 'add') {
        if (isMap !== (em[3] !== undefined)) return null;
        if (isMap) {
          const v = verdictOf(em[3]!);
          if (!v) return null;
          data.push([2, [[2, verdictData(v)]]]);
        }
        if (comment !== undefined) data.push([6, commentData(comment)]);
      } else if (em[3] !== undefined) return null;
      const element: Attr = [1, [[1, [[1, key]]], ...data]];
      push(verb === 'add' ? MSG.NEWSETELEM : MSG.DELSETELEM, verb === 'add' ? NLM_F.CREATE : 0, [tableAttr, [2, str(name)], [3, [element]]]);
    }
  }
  if (family === null) return null;
  // Only the last command asks for an acknowledgement: the kernel reports every failure anyway,
  // and one acknowledgement per command would overflow the socket's buffer on a large batch.
  w.addFlags(lastCommand, NLM_F.ACK);
  w.message(MSG.BATCH_END, NLM_F.REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, []);
  return { datagram: w.bytes(), first: begin + 1, last: seq - 1, lineOf: (s) => lineOf[s - begin - 1] ?? '' };
}

/** A compiled transaction: the datagram, the sequence numbers of its commands, and the line each came from. */
export interface NftBatch {
  datagram: Buffer;
  first: number;
  last: number;
  lineOf(seq: number): string;
}


/** A dump request for one chain's rules (their handles, in order: parseRuleHandles). */
export function ruleDumpRequest(family: 'ip' | 'ip6', chain: string, seq: number): Buffer | null {
  if (!NAME.test(chain)) return null;
  return message((NFNL_SUBSYS_NFTABLES << 8) | MSG.GETRULE, NLM_F.REQUEST | NLM_F.DUMP, seq, FAMILY[family], 0, [[1, str('kube-proxy')], [2, str(chain)]]);
}

/** The handle of a rule in a dump's NEWRULE message body (after its 4-byte nfgenmsg), or null. */
export function ruleHandleOf(type: number, body: Buffer): string | null {
  if (type !== ((NFNL_SUBSYS_NFTABLES << 8) | MSG.NEWRULE) || body.length < 4) return null;
  const handle = parseAttrs(body.subarray(4)).get(3);
  return handle?.length === 8 ? handle.readBigUInt64BE(0).toString() : null;
}
