import test from 'ava';
import { renderMasqRules } from '../../src/agent/masq.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';

test('masquerade chain: kube-proxy-marked packets return first, then flannel\'s rule order', (t) => {
  const text = renderMasqRules(parseCidr('10.5.0.0/16'), parseCidr('10.5.7.0/24'));
  const nat = text.split('\n').filter((l) => l.startsWith('-A KNET-POSTRTG'));
  t.regex(nat[0]!, /-m mark --mark 0x4000\/0x4000 -j RETURN$/);
  t.regex(nat[1]!, /^-A KNET-POSTRTG -s 10.5.7.0\/24 -d 10.5.0.0\/16 .* -j RETURN$/);
  t.regex(nat[2]!, /^-A KNET-POSTRTG -s 10.5.0.0\/16 -d 10.5.7.0\/24 .* -j RETURN$/);
  t.regex(nat[3]!, /^-A KNET-POSTRTG ! -s 10.5.0.0\/16 -d 10.5.7.0\/24 .* -j RETURN$/);
  t.regex(nat[4]!, /^-A KNET-POSTRTG -s 10.5.0.0\/16 ! -d 224.0.0.0\/4 .* -j MASQUERADE --random-fully$/);
  t.regex(nat[5]!, /^-A KNET-POSTRTG ! -s 10.5.0.0\/16 -d 10.5.0.0\/16 .* -j MASQUERADE --random-fully$/);
  t.is(nat.length, 6);
  t.regex(text, /\*filter\n:KNET-FWD - \[0:0\]\n-A KNET-FWD -s 10.5.0.0\/16 .*-j ACCEPT\n-A KNET-FWD -d 10.5.0.0\/16 .*-j ACCEPT\nCOMMIT/);
});
