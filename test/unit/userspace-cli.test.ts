// `knet proxy --proxy-mode userspace` wiring: the data path is built from the same settings
// plus the userspace fields of KubeProxyConfiguration; nothing touches the kernel until a sync.
import test from 'ava';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createUserspaceDataPlane } from '../../src/cli/proxy-userspace.ts';
import { ConfigError, parseKubeProxyConfig, proxySettingsFromConfig } from '../../src/rules/config.ts';

const log = pino({ level: 'silent' });
const settings = proxySettingsFromConfig(undefined, { nodeName: 'n1', nodeIPs: ['192.168.77.2'] });
// A namespace that is never made: anything reaching the kernel by mistake fails instead of acting here.
const target = { backend: 'nft' as const, netns: 'knt-never-made' };

test('udpIdleTimeout and bindAddress come from the config; metrics land on the given registry', async (t) => {
  const registry = new Registry();
  const dp = await createUserspaceDataPlane({ target, settings, log, registry, config: parseKubeProxyConfig('kind: KubeProxyConfiguration\nudpIdleTimeout: 2s\nbindAddress: 10.0.0.5\n') });
  t.is(dp.o.udpIdleMs, 2000);
  t.is(dp.o.bindAddress, '10.0.0.5');
  t.regex(await registry.metrics(), /knet_userspace_active_connections/);
});

test('defaults: all addresses (REDIRECT), kube-proxy idle timeout inside the data path', async (t) => {
  const dp = await createUserspaceDataPlane({ target, settings, log, registry: new Registry() });
  t.is(dp.o.udpIdleMs, undefined);
  t.is(dp.o.bindAddress, undefined);
  t.throws(() => parseKubeProxyConfig('udpIdleTimeout: soon\n'), { instanceOf: ConfigError, message: /udpIdleTimeout: invalid duration "soon"/ });
  t.throws(() => parseKubeProxyConfig('udpIdleTimeout: 0s\n'), { instanceOf: ConfigError, message: /udpIdleTimeout: must be greater than 0/ });
});

test('IPv6 is refused up front', async (t) => {
  await t.throwsAsync(createUserspaceDataPlane({ target, settings: { ...settings, family: 'IPv6' }, log, registry: new Registry() }), { message: /IPv4 only/ });
});
