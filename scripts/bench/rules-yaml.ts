// `kubectl get svc,endpointslices -A -o yaml | knet rules -f -` at real input sizes (issue 19.3):
// the whole `knet rules` process (the built CLI on plain node, YAML parse included) against
// iptables-nft-restore applying its output into a fresh network namespace, in one run.
// Goal: knet rules <= 0.30x the restore. Two files of the same cluster, laid out as kubectl prints
// YAML (sequence items at their key's indent): the objects' own fields only, and with the
// server-set fields kubectl also prints (clusterIPs, ipFamilies, policies, endpoint conditions,
// resourceVersion, timestamps).
// Usage (root for the restore half): node --import tsx scripts/bench/rules-yaml.ts [services=10000]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { syntheticCluster } from './synthetic-cluster.ts';

const services = Number(process.argv[2] ?? 10000);
const GOAL = 0.3;
const root = process.getuid?.() === 0;

/** The cluster as a v1 List, as kubectl -o yaml prints it (with the server-set fields, or without). */
function kubectlYaml(n: number, serverFields: boolean): string {
  const c = syntheticCluster(n, 3);
  const asKubectl = { indentSeq: false };
  if (!serverFields) return stringify({ apiVersion: 'v1', items: [...c.services, ...c.endpointSlices], kind: 'List', metadata: { resourceVersion: '' } }, asKubectl);
  const stamp = '2026-11-02T10:00:00Z';
  const meta = (m: Record<string, unknown>, i: number) => ({ ...m, creationTimestamp: stamp, resourceVersion: String(100000 + i) });
  const items = [
    ...c.services.map((s, i) => ({
      ...s, metadata: meta(s.metadata as Record<string, unknown>, i),
      spec: { ...s.spec, clusterIPs: [s.spec!.clusterIP], internalTrafficPolicy: 'Cluster', ipFamilies: ['IPv4'], ipFamilyPolicy: 'SingleStack', selector: { app: s.metadata!.name }, sessionAffinity: s.spec!.sessionAffinity ?? 'None', ...(s.spec!.type === 'NodePort' ? { externalTrafficPolicy: 'Cluster' } : {}) },
      status: { loadBalancer: {} },
    })),
    ...c.endpointSlices.map((sl, i) => ({
      ...sl, metadata: meta(sl.metadata as Record<string, unknown>, n + i),
      endpoints: sl.endpoints!.map((e) => ({ ...e, conditions: { ready: true, serving: true, terminating: false } })),
    })),
  ];
  return stringify({ apiVersion: 'v1', items, kind: 'List', metadata: { resourceVersion: '' } }, asKubectl);
}

function timed(cmd: string, args: string[], input?: string): { ms: number; stdout: string } {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', maxBuffer: 1 << 30, ...(input === undefined ? {} : { input }) });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr.slice(0, 400)}`);
  return { ms, stdout: r.stdout };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const dir = mkdtempSync(join(tmpdir(), 'knt-b-rules-'));
try {
  for (const serverFields of [false, true]) {
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, kubectlYaml(services, serverFields));
    const args = ['dist/knet.js', 'rules', '-f', file, '--node-name', 'node-0', '--node-ip', '192.168.0.2'];
    const runs = [0, 1, 2].map(() => timed(process.execPath, args));
    const knet = median(runs.map((r) => r.ms));
    let restore = NaN;
    if (root) {
      const ns = randomNetnsName('knt-b');
      await addNetns(ns);
      try {
        restore = timed('ip', ['netns', 'exec', ns, 'iptables-nft-restore'], runs[0]!.stdout).ms;
      } finally {
        await deleteNetns(ns);
      }
    }
    const ratio = knet / restore;
    console.log(`knet rules -f: ${(statSync(file).size / 2 ** 20).toFixed(1)} MB of YAML (${services} services x 3 endpoints, ${serverFields ? 'with' : 'without'} server-set fields): whole process p50 of 3 ${knet.toFixed(0)} ms`);
    console.log(`  iptables-nft-restore of its output into a fresh namespace: ${root ? `${restore.toFixed(0)} ms` : 'skipped (not root)'}`);
    if (root) console.log(`  knet rules / restore ${ratio.toFixed(2)}; goal <= ${GOAL}: ${ratio <= GOAL ? 'met' : 'MISSED'}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
