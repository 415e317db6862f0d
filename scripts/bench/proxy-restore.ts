// Measures iptables-restore strategies for a kube-proxy-shaped nat table, inside a throwaway
// namespace, to choose how knet's full sync writes many chains (see src/proxy/applier.ts).
// Usage: node --import tsx scripts/bench/proxy-restore.ts [services] [chunk]
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { iptablesRestore, type IptablesBackend } from '../../src/kernel/iptables.ts';

const n = Number(process.argv[2] ?? 5000);
const chunk = Number(process.argv[3] ?? 500);

function svcChains(i: number): { chains: string[]; rules: string[] } {
  const svc = `KUBE-SVC-${String(i).padStart(16, '0')}`;
  const chains = [svc];
  const rules: string[] = [];
  const seps: string[] = [];
  for (let e = 0; e < 3; e++) {
    const sep = `KUBE-SEP-${String(i * 3 + e).padStart(16, '0')}`;
    seps.push(sep);
    chains.push(sep);
    const ip = `10.${128 + ((i * 3 + e) >> 16)}.${((i * 3 + e) >> 8) & 255}.${(i * 3 + e) & 255}`;
    rules.push(`-A ${sep} -s ${ip}/32 -j KUBE-MARK-MASQ`, `-A ${sep} -p tcp -m tcp -j DNAT --to-destination ${ip}:8080`);
  }
  rules.push(`-A ${svc} -m statistic --mode random --probability 0.3333333333 -j ${seps[0]}`,
    `-A ${svc} -m statistic --mode random --probability 0.5000000000 -j ${seps[1]}`, `-A ${svc} -j ${seps[2]}`);
  return { chains, rules };
}

function text(from: number, to: number, withServices: boolean): string {
  const decl: string[] = [];
  const rules: string[] = [];
  if (withServices) decl.push(':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]');
  for (let i = from; i < to; i++) {
    const c = svcChains(i);
    decl.push(...c.chains.map((x) => `:${x} - [0:0]`));
    rules.push(...c.rules);
    if (withServices) rules.push(`-A KUBE-SERVICES -d 172.30.${i >> 8}.${i & 255}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-${String(i).padStart(16, '0')}`);
  }
  return ['*nat', ...decl, ...rules, 'COMMIT', ''].join('\n');
}

async function time(label: string, f: () => Promise<void>): Promise<void> {
  const t0 = performance.now();
  await f();
  console.log(`${label}: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}

for (const backend of ['nft', 'legacy'] as IptablesBackend[]) {
  const ns = randomNetnsName('knt-p');
  await addNetns(ns);
  try {
    const t = { backend, netns: ns };
    await iptablesRestore(t, '*nat\n:KUBE-MARK-MASQ - [0:0]\nCOMMIT\n', { noflush: true });
    await time(`${backend} ${n} svcs, --noflush, chunks of ${chunk}`, async () => {
      for (let i = 0; i < n; i += chunk) await iptablesRestore(t, text(i, Math.min(n, i + chunk), false), { noflush: true });
    });
    await time(`${backend} ${n} svcs again (all chains exist), --noflush, chunks of ${chunk}`, async () => {
      for (let i = 0; i < n; i += chunk) await iptablesRestore(t, text(i, Math.min(n, i + chunk), false), { noflush: true });
    });
    await time(`${backend} one service rewrite, --noflush`, () => iptablesRestore(t, text(7, 8, false), { noflush: true }));
    const ns2 = randomNetnsName('knt-p');
    await addNetns(ns2);
    try {
      await time(`${backend} ${n} svcs, table replace (no --noflush)`, () => iptablesRestore({ backend, netns: ns2 }, text(0, n, true)));
    } finally { await deleteNetns(ns2); }
  } finally {
    await deleteNetns(ns);
  }
}
