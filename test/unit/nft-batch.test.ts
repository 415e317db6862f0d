// The netlink batch compiler knows exactly the shapes a sync writes for services (and a full
// sync's flush of the element containers) and declines the rest (so `nft -f` runs them); the
// sender waits for the last command's acknowledgement, names the line the kernel refused, ignores
// late answers of earlier batches, and sends nothing larger than the socket says it takes; rules
// inserted first and deleted by handle; a chain's rule handles read from a dump, which is refused
// when it is incomplete; one request at a time on the socket. The bytes themselves are checked
// against the kernel in test/integration/nft-batch.test.ts.
import test from 'ava';
import { compileNftBatch, ruleHandleOf, sourceIntervals } from '../../src/kernel/nft-batch.ts';
import { NftBatchError, NftNetlink } from '../../src/kernel/nft-netlink.ts';
import { linesOf } from '../../src/kernel/nft.ts';
import { decodeMessages, encodeError, encodeMessage, nlattr, parseAttrs } from '../../src/kernel/netlink/codec.ts';
import type { NetlinkTransport } from '../../src/kernel/netlink/transport.ts';

const T = 'ip kube-proxy';

/** Attributes in order, repeated types kept (a list of expressions). */
function attrList(b: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  for (let at = 0; at + 4 <= b.length;) {
    const len = b.readUInt16LE(at);
    out.push([b.readUInt16LE(at + 2) & 0x3fff, b.subarray(at + 4, at + len)]);
    at += (len + 3) & ~3;
  }
  return out;
}
const known = [
  `add chain ${T} service-ABC-ns/web/tcp/http`,
  `flush chain ${T} service-ABC-ns/web/tcp/http`,
  `delete chain ${T} endpoint-OLD-ns/web/tcp/http__10.1.0.9/80`,
  `add rule ${T} service-ABC-ns/web/tcp/http ip daddr 172.30.0.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade`,
  `add rule ${T} service-ABC-ns/web/tcp/http ip daddr 172.30.0.1 ip saddr != 10.16.0.0/12 jump mark-for-masquerade`,
  `add rule ${T} service-ABC-ns/web/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-A , 1 : goto endpoint-B }`,
  `add rule ${T} endpoint-A ip saddr 10.1.0.1 jump mark-for-masquerade`,
  `add rule ${T} endpoint-A meta l4proto sctp dnat to 10.1.0.1:80`,
  `add rule ${T} external-ABC goto service-ABC-ns/web/tcp/http`,
  `add rule ${T} external-ABC ip saddr 10.0.0.0/8 goto service-ABC-ns/web/tcp/http comment "short-circuit pod traffic"`,
  `add rule ${T} external-ABC fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`,
  `add rule ${T} external-ABC fib saddr type local goto service-ABC-ns/web/tcp/http comment "short-circuit local traffic"`,
  `add set ${T} affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }`,
  `add rule ${T} service-ABC ip saddr @affinity-X goto endpoint-A`,
  `add rule ${T} endpoint-A update @affinity-X { ip saddr }`,
  `delete set ${T} affinity-Y`,
  `add rule ${T} firewall-ABC ip saddr != { 203.0.113.0/24 , 198.51.100.7 } drop`,
  `add rule ${T} firewall-ABC ip saddr != { 203.0.113.0/24 } drop`,
  `add rule ${T} service-ABC ip daddr 172.30.0.1 iifname != cni0 jump mark-for-masquerade`,
  `add rule ${T} external-ABC iifname veth* goto service-ABC comment "short-circuit pod traffic"`,
  `add element ${T} service-ips { 172.30.0.1 . tcp . 80 : goto service-ABC-ns/web/tcp/http }`,
  `add element ${T} no-endpoint-services { 172.30.0.2 . udp . 53 comment "ns/dns:dns" : goto reject-chain }`,
  `add element ${T} service-nodeports { tcp . 30080 : goto external-ABC }`,
  `add element ${T} cluster-ips { 172.30.0.1 }`,
  `delete element ${T} service-ips { 172.30.0.1 . tcp . 80 }`,
];

test('the shapes a sync writes for services compile; each is one command, a numgen vmap or a source-range set three (set, elements, rule)', (t) => {
  for (const line of known) t.truthy(compileNftBatch([line], 1), line);
  const b = compileNftBatch(known, 100)!;
  t.is(b.first, 101);
  // Two lines make three commands each (an anonymous set, its elements, the rule).
  t.is(b.last, 101 + known.length + 4 - 1);
  const messages = decodeMessages(b.datagram);
  t.is(messages.length, known.length + 4 + 2);
  // Begin and end of the batch around the commands; only the last command asks for an acknowledgement.
  t.deepEqual([messages[0]!.type, messages.at(-1)!.type], [0x10, 0x11]);
  t.deepEqual(messages.slice(1, -1).map((m) => (m.flags & 4) !== 0), [...Array(known.length + 3).fill(false), true]);
  t.is(b.lineOf(b.last), known.at(-1)!);
  t.is(b.lineOf(106), known[5]!, 'the anonymous set belongs to its rule');
});

test('source ranges as nft keeps them: sorted, overlapping and adjacent ranges merged, the last address open', (t) => {
  const v4 = (list: string[]) => sourceIntervals('ip', list)?.map(([a, b]) => `${a.toString(16)}-${b.toString(16)}`);
  t.deepEqual(v4(['192.168.0.0/16', '5.6.7.8']), ['5060708-5060709', 'c0a80000-c0a90000']);
  t.deepEqual(v4(['0.0.0.0/1', '10.0.0.0/8', '10.1.0.0/16', '11.0.0.0/8', '240.0.0.0/4']), ['0-80000000', 'f0000000-100000000']);
  t.deepEqual(v4(['10.0.0.0/9', '10.128.0.0/9', '1.2.3.4', '1.2.3.5']), ['1020304-1020306', 'a000000-b000000']);
  t.deepEqual(v4(['0.0.0.0/0']), ['0-100000000']);
  t.is(v4(['10.0.0.1/8']), undefined, 'host bits set');
  t.is(v4(['2001:db8::/32']), undefined, 'another family');
  t.deepEqual(sourceIntervals('ip6', ['fd00::1', '2001:db8::/32'])?.length, 2);
});

test('source ranges: an anonymous interval set as nft sends it (end marker at 0, ends flagged, the last range open)', (t) => {
  const messages = decodeMessages(compileNftBatch([`add rule ${T} firewall-ABC ip saddr != { 192.168.0.0/16 , 240.0.0.0/4 } drop`], 1)!.datagram).slice(1, -1);
  t.deepEqual(messages.map((m) => m.type & 0xff), [9, 12, 6], 'set, elements, rule');
  const set = parseAttrs(messages[0]!.data.subarray(4));
  t.is(set.get(2)!.toString('latin1'), '__set%d\0');
  t.is(set.get(3)!.readUInt32BE(0), 0x07, 'anonymous | constant | interval');
  t.is(parseAttrs(set.get(9)!).get(1)!.readUInt32BE(0), 5, "nft's size: two per range and the marker at 0");
  const elements = attrList(parseAttrs(messages[1]!.data.subarray(4)).get(3)!).map(([, e]) => new Map(attrList(e)));
  const keyOf = (e: Map<number, Buffer>) => parseAttrs(e.get(1)!).get(1)!.toString('hex');
  t.deepEqual(elements.map(keyOf), ['00000000', 'c0a80000', 'c0a90000', 'f0000000']);
  t.deepEqual(elements.map((e) => e.get(3)?.readUInt32BE(0) ?? 0), [1, 0, 1, 0], 'interval ends');
  t.deepEqual(elements.map((e) => e.get(6)?.toString('hex')), [undefined, undefined, undefined, '010401000000'], 'the last range runs to the end');
});

test('affinity sets and rules, fib and comments: the attributes nft sends', (t) => {
  const attrsOf = (line: string, at = 0) => {
    const m = decodeMessages(compileNftBatch([line], 1)!.datagram).slice(1, -1)[at]!;
    return { type: m.type & 0xff, attrs: parseAttrs(m.data.subarray(4)) };
  };
  const set = attrsOf(`add set ${T} affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }`);
  t.is(set.type, 9);
  t.is(set.attrs.get(3)!.readUInt32BE(0), 0x30, 'flags timeout | eval');
  t.deepEqual([set.attrs.get(4)!.readUInt32BE(0), set.attrs.get(5)!.readUInt32BE(0)], [7, 4], 'ipv4_addr, 4 bytes');
  t.is(set.attrs.get(11)!.readBigUInt64BE(0), 10_800_000n, 'timeout in ms');
  const set6 = attrsOf(`add set ip6 kube-proxy affinity-X { type ipv6_addr ; flags dynamic,timeout ; timeout 60s ; }`);
  t.deepEqual([set6.attrs.get(4)!.readUInt32BE(0), set6.attrs.get(5)!.readUInt32BE(0)], [8, 16], 'ipv6_addr, 16 bytes');
  t.is(attrsOf(`delete set ${T} affinity-X`).type, 11);
  const commented = attrsOf(`add rule ${T} external-ABC fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`);
  t.deepEqual(commented.attrs.get(7), Buffer.from('\x00\x19masquerade local traffic\x00', 'latin1'), "the comment as the rule's user data");
  // A set this batch declares is named and given by id; one declared before, by name alone.
  const rules = decodeMessages(compileNftBatch([`add set ${T} affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 5s ; }`,
    `add rule ${T} service-ABC ip saddr @affinity-X goto endpoint-A`, `add rule ${T} service-ABC ip saddr @affinity-Y goto endpoint-B`], 1)!.datagram).slice(2, -1);
  const lookupAttrs = rules.map((m) => {
    for (const [, elem] of attrList(parseAttrs(m.data.subarray(4)).get(4)!)) {
      const e = new Map(attrList(elem));
      if (e.get(1)!.toString('latin1') === 'lookup\0') return new Map(attrList(e.get(2)!));
    }
    throw new Error('no lookup');
  });
  t.deepEqual(lookupAttrs.map((a) => a.get(1)!.toString('latin1')), ['affinity-X\0', 'affinity-Y\0']);
  t.deepEqual(lookupAttrs.map((a) => a.get(4)?.readUInt32BE(0)), [1, undefined]);
});

test('anything else is declined whole, so nft runs it', (t) => {
  for (const line of [
    `add table ${T} { comment "rules for kube-proxy" ; }`,
    `add chain ${T} nat-prerouting { type nat hook prerouting priority -100 ; }`,
    `add rule ${T} firewall-ABC ip saddr != { 203.0.113.1/24 } drop`,
    `add rule ${T} firewall-ABC ip saddr != { 2001:db8::/32 } drop`,
    `add rule ${T} firewall-ABC ip saddr != { 203.0.113.0/24 } accept`,
    `add rule ${T} firewall-ABC ip saddr != {  } drop`,
    `add rule ${T} external-ABC fib daddr type local jump mark-for-masquerade`,
    `add rule ${T} external-ABC iifname != cni0 goto service-ABC`,
    `add rule ${T} service-ABC ip daddr 172.30.0.1 iifname cni0 jump mark-for-masquerade`,
    `add rule ${T} external-ABC iifname eth0.100 goto service-ABC`,
    `add rule ${T} external-ABC iifname bridge goto service-ABC`,
    `add rule ${T} external-ABC iifname 0br goto service-ABC`,
    `add rule ${T} firewall-ABC ip saddr != { 1.2.3.4 , 1.2.3.5 } drop`,
    `add rule ${T} external-ABC iifname averyveryverylongname goto service-ABC`,
    `add rule ${T} external-ABC goto service-ABC comment "caf\u00e9"`,
    `add rule ${T} external-ABC goto service-ABC comment "${'x'.repeat(129)}"`,
    `add rule ${T} endpoint-A update @affinity-X { ip daddr }`,
    `add rule ${T} endpoint-A update @affinity-X { ip6 saddr }`,
    `add rule ${T} service-ABC ip saddr @bad"set goto endpoint-A`,
    `add set ${T} affinity-X { type ipv6_addr ; flags dynamic,timeout ; timeout 10800s ; }`,
    `add set ${T} affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 0s ; }`,
    `add set ${T} affinity-X { type ipv4_addr ; flags timeout ; timeout 10s ; }`,
    `add set ${T} affinity-X`,
    `add rule ${T} endpoint-A counter`,
    `add rule ${T} service-ABC numgen random mod 2 vmap { 0 : goto A }`,
    `add rule ${T} service-ABC ip daddr 172.30.0.1 ip saddr != 10.0.0.1/8 jump mark-for-masquerade`,
    `add rule ${T} endpoint-A meta l4proto tcp dnat to [fd00::1]:80`,
    `add rule ip6 kube-proxy endpoint-A meta l4proto tcp dnat to 10.1.0.1:80`,
    `flush set ${T} service-ips`,
    `flush map ${T} cluster-ips`,
    `flush set ${T} affinity-X`,
    `flush map ${T} service-ips extra`,
    `delete set ${T} cluster-ips`,
    `delete set ${T} affinity-X extra`,
    `delete map ${T} service-ips`,
    `add map ${T} service-ips`,
    `add element ${T} service-ips { 172.30.0.1 . tcp . 80 }`,
    `add element ${T} cluster-ips { 172.30.0.1 : drop }`,
    `add element ${T} some-other-map { 172.30.0.1 }`,
    `add element ${T} service-nodeports { icmp . 30080 : drop }`,
    `add chain ip other-table x`,
    `add chain ${T} bad"name`,
  ]) t.is(compileNftBatch([`add chain ${T} ok`, line], 1), null, line);
  t.is(compileNftBatch([`add chain ${T} a`, 'add chain ip6 kube-proxy b'], 1), null, 'one family per batch');
  t.is(compileNftBatch([], 1), null);
});

/** A kernel that acknowledges (or refuses `refuse`) a batch, answering once per send. */
class FakeKernel implements NetlinkTransport {
  sent: Buffer[] = [];
  private answers: Uint8Array[] = [];
  private waiting: ((d: Uint8Array) => void) | null = null;
  constructor(private readonly refuse?: (line: number) => boolean, private readonly stale: Uint8Array[] = []) {}
  send(datagram: Uint8Array): void {
    const messages = decodeMessages(datagram).slice(1, -1);
    this.sent.push(Buffer.from(datagram));
    const bad = messages.findIndex((_, i) => this.refuse?.(i));
    const answer = bad >= 0 ? encodeError(messages[bad]!.seq, 16 /* EBUSY */) : encodeError(messages.at(-1)!.seq, 0);
    for (const a of [...this.stale.splice(0), answer]) this.deliver(a);
  }
  protected push(d: Uint8Array): void { this.deliver(d); }
  private deliver(d: Uint8Array) {
    if (this.waiting) { const w = this.waiting; this.waiting = null; w(d); } else this.answers.push(d);
  }
  receive(): Promise<Uint8Array> {
    const next = this.answers.shift();
    return next ? Promise.resolve(next) : new Promise((r) => { this.waiting = r; });
  }
  close(): void {}
}

test('the sender: the last acknowledgement commits; a refusal names its line; late answers of other batches are ignored', async (t) => {
  const kernel = new FakeKernel();
  const nl = new NftNetlink(() => kernel, 1000);
  t.true(await nl.apply(known.slice(0, 3)));
  // An error answer with another batch's sequence number arrives first: not this batch's.
  const refusing = new FakeKernel((i) => i === 1, [encodeError(7, 2)]);
  const nl2 = new NftNetlink(() => refusing, 1000);
  const err = await t.throwsAsync(nl2.apply(known.slice(0, 3)));
  t.true(err instanceof NftBatchError);
  t.is((err as NftBatchError).line, known[1]);
  t.is((err as NftBatchError).code, 'EBUSY');
});

test('the sender sends nothing it cannot compile or that is larger than the socket takes', async (t) => {
  const kernel = new FakeKernel();
  const nl = new NftNetlink(() => kernel, 1000);
  t.false(await nl.apply([`add rule ${T} endpoint-A counter`]));
  // A socket that does not say what it takes: 128 KiB.
  const many = Array.from({ length: 1500 }, (_, i) => `add rule ${T} endpoint-A ip saddr 10.1.${i >> 8}.${i & 255} jump mark-for-masquerade`);
  t.false(await nl.apply(many));
  t.false(await nl.apply(Array.from({ length: 4000 }, () => `add chain ${T} x`)));
  t.is(kernel.sent.length, 0);
  // One whose send buffer was raised (a full sync's transactions): what fits is sent.
  class BigKernel extends FakeKernel { maxDatagram() { return 8 << 20; } }
  const big = new BigKernel();
  const nlBig = new NftNetlink(() => big, 1000);
  t.true(await nlBig.apply(many));
  t.true(await nlBig.apply(Array.from({ length: 30000 }, () => `add chain ${T} x`)));
  t.false(await nlBig.apply(Array.from({ length: 250000 }, () => `add chain ${T} x`)), 'more lines than fit are not sent');
  t.is(big.sent.length, 2);
});

test('a vmap too large for one netlink attribute (16-bit length) is declined, so nft runs it', (t) => {
  const vmap = (n: number) => `add rule ${T} service-ABC-ns/web/tcp/http numgen random mod ${n} vmap { ${Array.from({ length: n }, (_, i) => `${i} : goto endpoint-ABCDEFGH-ns/web/tcp/http__10.1.${i >> 8}.${i & 255}/8080`).join(' , ')} }`;
  t.truthy(compileNftBatch([vmap(300)], 1));
  t.is(compileNftBatch([`add chain ${T} x`, vmap(1000)], 1), null);
});

test('a transaction given in pieces is split into the same lines, whether or not a piece ends a line', (t) => {
  const text = `add chain ${T} a\nadd chain ${T} b\nflush chain ${T} a\n`;
  for (let cut = 0; cut <= text.length; cut++) t.deepEqual(linesOf([text.slice(0, cut), text.slice(cut)]), text.split('\n'), `cut at ${cut}`);
  t.deepEqual(linesOf(['x\n', 'y']), ['x', 'y']);
  t.deepEqual(linesOf([]), ['']);
});

const DELSETELEM = (10 << 8) | 14;

test('a full sync flushes the element containers: a DELSETELEM naming the set, with no elements', (t) => {
  const b = compileNftBatch([`flush map ${T} service-ips`, `flush set ${T} cluster-ips`, `flush map ${T} no-endpoint-nodeports`, `flush set ${T} nodeport-ips`], 1)!;
  const commands = decodeMessages(b.datagram).slice(1, -1);
  t.deepEqual(commands.map((m) => m.type), [DELSETELEM, DELSETELEM, DELSETELEM, DELSETELEM]);
  const attrs = parseAttrs(commands[0]!.data.subarray(4));
  t.is(attrs.get(1)?.toString('latin1'), 'kube-proxy\0');
  t.is(attrs.get(2)?.toString('latin1'), 'service-ips\0');
  t.false(attrs.has(3), 'no element list: the whole set');
});

const NEWRULE = (10 << 8) | 6;
const DELRULE = (10 << 8) | 8;

test('insert rule is a NEWRULE without APPEND; delete rule ... handle N a DELRULE carrying the handle; bad handles are declined', (t) => {
  const chain = 'service-ABC-ns/web/tcp/http';
  const b = compileNftBatch([`insert rule ${T} ${chain} ip daddr 172.30.0.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade`, `add rule ${T} ${chain} ip daddr 172.30.0.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade`, `delete rule ${T} ${chain} handle 4242`], 1)!;
  const [inserted, added, deleted] = decodeMessages(b.datagram).slice(1, -1);
  t.is(inserted!.type, NEWRULE);
  t.is(inserted!.flags & 0xc00, 0x400, 'CREATE without APPEND: the rule goes first');
  t.is(added!.flags & 0xc00, 0xc00, 'add: CREATE and APPEND');
  t.is(deleted!.type, DELRULE);
  const attrs = parseAttrs(deleted!.data.subarray(4));
  t.is(attrs.get(3)?.readBigUInt64BE(0), 4242n, 'the handle, without which a DELRULE flushes the chain');
  t.is(attrs.get(2)?.toString('latin1'), `${chain}\0`);
  for (const line of [`delete rule ${T} ${chain} handle 0`, `delete rule ${T} ${chain} handle x`, `delete rule ${T} ${chain} handle 9223372036854775808`, `delete rule ${T} ${chain}`, `insert chain ${T} ${chain}`, `insert element ${T} cluster-ips { 172.30.0.1 }`]) {
    t.is(compileNftBatch([line], 1), null, line);
  }
});

/** A dump answer: NEWRULE messages with these handles (null: one without a handle), split over datagrams. */
const rule = (seq: number, handle: bigint | null, flags = 2) => encodeMessage(NEWRULE, flags, seq, [Buffer.from([2, 0, 0, 0]), nlattr(2, Buffer.from('c\0')), ...(handle === null ? [] : [nlattr(3, (() => { const h = Buffer.alloc(8); h.writeBigUInt64BE(handle); return h; })())])]);
const done = (seq: number, errno = 0) => { const d = encodeMessage(3, 2, seq, [Buffer.alloc(4)]); d.writeInt32LE(-errno, 16); return d; };

/** A kernel that answers each dump request with `answer(seq)` and acknowledges batches. */
class DumpKernel extends FakeKernel {
  constructor(private readonly answer: (seq: number) => Buffer[][]) { super(); }
  override send(datagram: Uint8Array): void {
    const [first] = decodeMessages(datagram);
    if (first!.type !== ((10 << 8) | 7)) { super.send(datagram); return; }
    for (const parts of this.answer(first!.seq)) this.push(Buffer.concat(parts));
  }
}

test('rule handles: read from a dump over several datagrams; an error, an interrupted dump or a rule without a handle is refused', async (t) => {
  t.is(ruleHandleOf(NEWRULE, rule(1, 7n).subarray(16)), '7');
  const ok = new NftNetlink(() => new DumpKernel((seq) => [[rule(seq, 11n), rule(seq, 12n)], [rule(seq + 5, 99n), rule(seq, 13n), done(seq)]]), 1000);
  t.deepEqual(await ok.ruleHandles('ip', 'c'), ['11', '12', '13'], 'answers to other requests are skipped');
  for (const [what, answer] of [
    ['ENOENT', (seq: number) => [[encodeError(seq, 2)]]],
    ['an error in DONE', (seq: number) => [[rule(seq, 1n), done(seq, 4)]]],
    ['interrupted', (seq: number) => [[rule(seq, 1n, 2 | 0x10), done(seq)]]],
    ['no handle', (seq: number) => [[rule(seq, null), done(seq)]]],
  ] as const) {
    const nl = new NftNetlink(() => new DumpKernel(answer), 1000);
    await t.throwsAsync(nl.ruleHandles('ip', 'c'), undefined, what);
  }
  await t.throwsAsync(ok.ruleHandles('ip', 'bad"name'));
});

test('one request at a time: a batch and a dump started together both get their answers', async (t) => {
  const kernel = new DumpKernel((seq) => [[rule(seq, 5n), done(seq)]]);
  const nl = new NftNetlink(() => kernel, 1000);
  const [applied, handles] = await Promise.all([nl.apply(known.slice(0, 2)), nl.ruleHandles('ip', 'c'), nl.apply(known.slice(2, 3))]);
  t.true(applied);
  t.deepEqual(handles, ['5']);
});
