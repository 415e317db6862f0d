// Generators of fuzzed plugin calls: a valid knet config with fields replaced by arbitrary JSON,
// dropped or added, sometimes not JSON at all, and CNI_* variables valid, odd or missing. Paths
// the plugin would write to or read from stay inside `dir` or are ones it must refuse: a fuzz
// run never makes the plugin touch a real file outside it.
import fc from 'fast-check';

/** The spec's error codes and knet's own (cni/README.md); 999 is an unexpected exception. */
export const CNI_CODES = [1, 2, 3, 4, 5, 6, 7, 11, 50, 100, 101, 102, 103, 104];

const nasty = fc.constantFrom('', ' ', '..', '/', '-x', 'a'.repeat(300), 'eth0\n', 'a;rm -rf /', '$(id)', '\u0000', 'é', '10.0.0.0/8', '0.0.0.0/0',
  '255.255.255.255', '1e3', 'constructor', '__proto__', 'toString');
const anyValue = fc.oneof(fc.anything({ maxDepth: 2 }), nasty, fc.integer(), fc.double(), fc.boolean(), fc.constant(null));

export function fuzzCall(dir: string, goodNetns: string) {
  const paths = fc.constantFrom(dir, `${dir}/sub/deeper`, 'relative/dir', `${dir}/../x`, '/proc/knt-c', '/proc/self/fd', '/dev/zero', '/sys/knt-c', '/etc/passwd/x', '');
  const subnetFiles = fc.constantFrom(`${dir}/missing.env`, '/etc/passwd', '/etc/hostname', '/dev/zero', '/proc/self/environ', 'relative.env', `${dir}/../x.env`, '/');
  const base = {
    cniVersion: fc.oneof(fc.constantFrom('0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'), fc.constantFrom('0.2.0', '2.0.0', '', '1.1'), anyValue),
    name: fc.oneof(fc.constant('fuzz'), anyValue),
    type: fc.oneof(fc.constant('knet'), anyValue),
    subnet: fc.oneof(fc.constant('10.62.0.0/24'), fc.constantFrom('10.62.0.0/30', '10.62.0.0/31', '10.62.0.7/24', '300.1.1.1/24', '10.62.0.0/33'), anyValue),
    network: fc.oneof(fc.constant('10.62.0.0/16'), fc.constantFrom('10.63.0.0/16', '10.62.0.0/8'), anyValue),
    bridge: fc.oneof(fc.constant('fbr0'), anyValue),
    mtu: fc.oneof(fc.constant(1400), fc.integer({ min: -10, max: 70000 }), anyValue),
    hairpinMode: fc.oneof(fc.boolean(), anyValue),
    ipMasq: fc.oneof(fc.boolean(), anyValue),
    iptablesBackend: fc.oneof(fc.constantFrom('nft', 'legacy'), anyValue),
    dataDir: fc.oneof(paths, anyValue.filter((v) => typeof v !== 'string')),
    subnetFile: fc.oneof(subnetFiles, anyValue.filter((v) => typeof v !== 'string')),
    routes: fc.oneof(fc.constant([{ dst: '0.0.0.0/0' }]), fc.array(fc.record({ dst: fc.oneof(fc.constantFrom('0.0.0.0/0', '10.9.0.0/16', '10.9.0.1/16'), anyValue), gw: fc.oneof(fc.constantFrom('10.62.0.1', '10.62.0.9', '192.168.0.1'), anyValue) }, { requiredKeys: [] }), { maxLength: 3 }), anyValue),
    exclude: fc.oneof(fc.constant([]), fc.array(fc.oneof(fc.constantFrom('10.62.0.2', '10.62.0.0/28', '0.0.0.0/0', '10.62.0.0/8'), anyValue), { maxLength: 3 }), anyValue),
    dns: fc.oneof(fc.constant({ nameservers: ['10.96.0.10'] }), anyValue),
    prevResult: fc.oneof(fc.constant(undefined), anyValue, fc.record({ interfaces: anyValue, ips: anyValue, routes: anyValue }, { requiredKeys: [] })),
    'cni.dev/valid-attachments': fc.oneof(fc.constant(undefined), fc.constant([]), anyValue),
  };
  // Each field: kept valid most of the time, so the calls get past the first check often.
  const keys = Object.keys(base) as (keyof typeof base)[];
  const conf = fc.record(Object.fromEntries(keys.map((k) => [k, fc.oneof({ weight: 4, arbitrary: validOf(k, dir) }, { weight: 1, arbitrary: base[k] })])) as { [K in keyof typeof base]: fc.Arbitrary<unknown> })
    .chain((c) => fc.tuple(fc.constant(c), fc.subarray(keys, { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 8 }), anyValue, { maxKeys: 2 })))
    .map(([c, drop, extra]) => {
      const out: Record<string, unknown> = { ...extra, ...c };
      for (const k of drop) delete out[k];
      for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
      return out;
    });
  const stdin = fc.oneof({ weight: 8, arbitrary: conf.map((c) => JSON.stringify(c)) },
    { weight: 1, arbitrary: fc.oneof(fc.string(), fc.constantFrom('', '{', '[]', 'null', '"x"', '{"cniVersion":"1.1.0"', '\u0000')) });
  const envVar = (good: string) => fc.oneof({ weight: 5, arbitrary: fc.constant<string | undefined>(good) }, { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 20 }), nasty) });
  const env = fc.record({
    CNI_COMMAND: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION') }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom('add', '', 'FROB'), fc.string({ maxLength: 6 })) }),
    CNI_CONTAINERID: envVar('fuzz-container'),
    CNI_NETNS: fc.oneof(envVar(goodNetns), fc.constantFrom('/run/netns/knt-c-gone', '/etc/hostname', '/run/netns/../netns/x', 'relative')),
    CNI_IFNAME: envVar('eth0'),
    CNI_PATH: envVar('/opt/cni/bin'),
    CNI_ARGS: envVar('K8S_POD_NAME=p;K8S_POD_NAMESPACE=default'),
  }).map((e) => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>);
  return fc.record({ stdin, env });
}

function validOf(key: string, dir: string): fc.Arbitrary<unknown> {
  const valid: Record<string, unknown> = {
    cniVersion: '1.1.0', name: 'fuzz', type: 'knet', subnet: '10.62.0.0/24', network: '10.62.0.0/16', bridge: 'fbr0', mtu: 1400,
    hairpinMode: true, ipMasq: false, iptablesBackend: 'nft', dataDir: dir, subnetFile: `${dir}/missing.env`, routes: [{ dst: '0.0.0.0/0' }],
    exclude: [], dns: {}, prevResult: undefined, 'cni.dev/valid-attachments': undefined,
  };
  return fc.constant(valid[key]);
}
