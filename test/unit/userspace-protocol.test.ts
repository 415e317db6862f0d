// The forwarder's control messages are checked whole before anything is applied: a listen
// request names its bad field, an update with one bad endpoint or affinity is refused.
import test from 'ava';
import { invalidSpec, invalidUpdate, type PortSpec } from '../../src/proxy/userspace/forwarder/protocol.ts';

const spec = (over: Record<string, unknown> = {}) => ({
  protocol: 'tcp', name: 'default/web:http', bindHost: '127.0.0.1', port: 0, shared: false, stickySeconds: 0, endpoints: ['10.0.0.1:80'],
  idleMs: 60_000, keepAliveMs: 60_000, dialTimeoutsMs: [250], udpIdleMs: 250, maxFlows: 16, bufferBytes: 0, ...over,
}) as unknown as PortSpec;

test('listen specs: each bad field is named', (t) => {
  t.is(invalidSpec(spec()), null);
  t.is(invalidSpec(spec({ protocol: 'sctp' })), 'protocol');
  t.is(invalidSpec(spec({ port: 65536 })), 'port');
  for (const endpoints of [['web:80'], ['10.0.0.1'], ['10.0.0.256:80'], ['10.0.0.1:0'], ['10.0.0.1:70000'], [7], 'x', null]) {
    t.is(invalidSpec(spec({ endpoints })), 'endpoints', JSON.stringify(endpoints));
  }
  t.is(invalidSpec(spec({ stickySeconds: -1 })), 'stickySeconds');
  t.is(invalidSpec(spec({ stickySeconds: '10' })), 'stickySeconds');
  t.is(invalidSpec(spec({ dialTimeoutsMs: ['1'] })), 'dialTimeoutsMs');
  t.is(invalidSpec(spec({ maxFlows: '16' })), 'maxFlows');
  t.is(invalidSpec(null as unknown as PortSpec), 'spec');
});

test('updates: endpoints and affinity checked before any is applied', (t) => {
  t.is(invalidUpdate({ t: 'update', key: 'k', endpoints: ['10.0.0.1:80', '10.0.0.2:8080'], stickySeconds: 10800 }), null);
  t.is(invalidUpdate({ t: 'update', key: 'k', endpoints: [], stickySeconds: 0 }), null);
  t.is(invalidUpdate({ t: 'update', key: 'k', endpoints: ['10.0.0.1:80', 'web:80'], stickySeconds: 0 }), 'endpoints');
  t.is(invalidUpdate({ t: 'update', key: 'k', endpoints: 'x' as unknown as string[], stickySeconds: 0 }), 'endpoints');
  t.is(invalidUpdate({ t: 'update', key: 'k', endpoints: [], stickySeconds: 1.5 }), 'stickySeconds');
});
