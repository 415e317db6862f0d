// A bounded fuzz of what the agent reads from etcd (issue 15): arbitrary values and keys under
// subnets/ and at config. Whatever is stored, listing never throws, every well-formed lease is
// still listed, a bad one is reported by key, and the overlays' desired state (VXLAN and OVS GRE)
// is computed without throwing, with no bad value in it. A config is a config or a ConfigError.
import test from 'ava';
import fc from 'fast-check';
import { FakeClock } from '../helpers/fake-clock.ts';
import { MemoryKv } from '../helpers/memory-kv.ts';
import { SUBNETS, vxlanLease } from '../helpers/agent-harness.ts';
import { hostileValue, paths, replaced } from '../helpers/hostile.ts';
import { SubnetRegistry } from '../../src/subnet/etcd-registry.ts';
import { ConfigError, parseNetworkConfig } from '../../src/subnet/config.ts';
import { desiredVxlanState } from '../../src/overlay/vxlan/desired.ts';
import { desiredFlows } from '../../src/overlay/ovs-gre/flows.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';

const GOOD = JSON.parse(vxlanLease('192.168.50.3', '0a:00:00:00:00:03')) as unknown;
const CONFIG = { Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1 } };

/** A stored value: a good lease with one field replaced, arbitrary JSON, or text that is not JSON. */
const storedValue = fc.oneof(
  fc.tuple(fc.constantFrom(...paths(GOOD)), hostileValue).map(([path, value]) => JSON.stringify(replaced(GOOD, path, value))),
  hostileValue.map((v) => JSON.stringify(v) ?? 'undefined'),
  fc.string({ maxLength: 200 }),
);
const storedKey = fc.oneof(
  fc.integer({ min: 4, max: 250 }).map((n) => `10.5.${n}.0-24`),
  fc.constantFrom('10.5.300.0-24', '10.5.7.0-33', '10.6.0.0-24', '0.0.0.0-0', '10.5.8.0-24-extra', '', '..', '10.5.9.1-24', 'x'),
  fc.string({ maxLength: 30 }),
);

test('fuzzed subnets/ values and keys: listing never throws, good leases stay, the overlays skip the rest', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(fc.tuple(storedKey, storedValue), { maxLength: 6 }), async (entries) => {
    const kv = new MemoryKv(new FakeClock());
    kv.set(`${SUBNETS}10.5.2.0-24`, vxlanLease('192.168.50.2', '0a:00:00:00:00:02'));
    kv.set(`${SUBNETS}10.5.3.0-24`, JSON.stringify(GOOD));
    const hostile = new Map(entries.map(([k, v]) => [`${SUBNETS}${k}`, v]));
    hostile.delete(`${SUBNETS}10.5.2.0-24`);
    hostile.delete(`${SUBNETS}10.5.3.0-24`);
    for (const [k, v] of hostile) kv.set(k, v);
    const list = await new SubnetRegistry(kv).listLeases();
    const keys = list.leases.map((l) => l.key);
    if (!keys.includes('10.5.2.0-24') || !keys.includes('10.5.3.0-24')) throw new Error(`a good lease was lost: ${keys.join(' ')}`);
    if (list.leases.length + list.invalid.length !== hostile.size + 2) throw new Error('a stored key was neither listed nor reported');
    const own = list.leases.find((l) => l.key === '10.5.2.0-24')!;
    const peers = list.leases.filter((l) => l !== own);
    const network = parseCidr('10.5.0.0/16');
    const vxlan = desiredVxlanState({ device: 'flannel.1', vni: 1, network, own, peers, directRouting: false, underlay: null });
    const flows = desiredFlows({ network, own, peers, tunnelOfport: 1, internalOfport: 2 });
    // Everything that reaches the kernel is plain: addresses, CIDRs and MACs only.
    for (const fdb of vxlan.state.fdb) if (!/^[0-9a-f:]{17}$/.test(fdb.mac) || !/^\d+\.\d+\.\d+\.\d+$/.test(fdb.dst)) throw new Error(`bad FDB entry ${JSON.stringify(fdb)}`);
    for (const flow of flows.flows) if (!/^[\w=,.:/>\- ]+$/.test(flow)) throw new Error(`bad flow ${JSON.stringify(flow)}`);
    if (!vxlan.state.fdb.some((f) => f.dst === '192.168.50.3') && !list.leases.some((l) => l.key !== '10.5.3.0-24' && l.attrs.PublicIP === '192.168.50.3')) {
      throw new Error('the good peer was not programmed');
    }
  }), { numRuns: 300 });
  t.pass();
});

test('fuzzed config values: parseNetworkConfig gives a config or a ConfigError, nothing else', (t) => {
  const value = fc.oneof(
    fc.tuple(fc.constantFrom(...paths(CONFIG)), hostileValue).map(([path, v]) => JSON.stringify(replaced(CONFIG, path, v))),
    hostileValue.map((v) => JSON.stringify(v) ?? 'undefined'),
    fc.string({ maxLength: 200 }),
  );
  fc.assert(fc.property(value, (text) => {
    try {
      parseNetworkConfig(text);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw new Error(`${(err as Error)?.constructor?.name}: ${(err as Error)?.message} for ${text.slice(0, 100)}`);
    }
  }), { numRuns: 500 });
  t.pass();
});
