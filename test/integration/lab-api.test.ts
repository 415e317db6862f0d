// The lab API (the lab's kube-apiserver stand-in) against a real etcd: objects are stored under
// /registry/ with the etcd revision as resourceVersion, lists and watches speak the Kubernetes
// wire format (and @kubernetes/client-node's informer reads them), Services get ClusterIPs and
// NodePorts, EndpointSlices follow pod labels, the TCP listener is read-only, and a restarted
// API resumes from etcd (old resourceVersions get 410 Gone).
import test from 'ava';
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { startEtcd } from '../helpers/etcd.ts';
import { LabApi } from '../../src/lab/api.ts';
import { LabApiClient } from '../../src/lab/client.ts';
import { normalizePod, NETNS_ANNOTATION, type LabPod } from '../../src/lab/workload.ts';
import { InformerSource } from '../../src/k8s/informer.ts';
import { KubeConfig } from '@kubernetes/client-node';
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';

const log = pino({ level: 'silent' });

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function pod(name: string, labels: Record<string, string>, ip: string): LabPod {
  const p = normalizePod({ metadata: { name, labels }, spec: { nodeName: 'node-1', ports: [8080] } }, ['node-1']);
  p.metadata.annotations = { [NETNS_ANNOTATION]: `knt-l-${name}` };
  p.status = { podIP: ip };
  return p;
}

/** Reads a watch stream until `until` returns true for the events so far. */
function watch(port: number, path: string, until: (events: Array<{ type: string; object: any }>) => boolean): Promise<Array<{ type: string; object: any }>> {
  return new Promise((resolve, reject) => {
    const events: Array<{ type: string; object: any }> = [];
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let buf = '';
      res.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)));
          buf = buf.slice(nl + 1);
        }
        if (until(events)) { req.destroy(); resolve(events); }
      });
      res.on('end', () => resolve(events));
    });
    req.setTimeout(10_000, () => { req.destroy(); reject(new Error(`watch ${path}: timed out with ${JSON.stringify(events.map((e) => e.type))}`)); });
    req.on('error', (e) => { if (!events.length) reject(e); });
    req.end();
  });
}

test('lab API: storage in etcd, list/watch, allocation, derived slices, read-only TCP, restart', async (t) => {
  const etcd = await startEtcd(t);
  const dir = mkdtempSync(join(tmpdir(), 'knt-l-api-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const socketPath = join(dir, 'api.sock');
  const opts = { etcdEndpoint: etcd.endpoint, host: '127.0.0.1', port, socketPath, serviceCIDR: '10.254.0.0/16', nodePortRange: [30000, 32767] as const,
    flannelPrefix: '/coreos.com/network', networkConfig: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', log };
  let api = new LabApi(opts);
  t.teardown(() => api.stop());
  await api.start();
  const c = new LabApiClient(socketPath);
  t.true(await c.healthy());
  t.is(await etcd.get('/coreos.com/network/config'), opts.networkConfig, 'flannel network config written for the agents');

  const web = await c.putService({ metadata: { name: 'web', namespace: 'default' }, spec: { type: 'NodePort', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  t.is(web.spec!.clusterIP, '10.254.0.10');
  t.is(web.spec!.ports![0]!.nodePort, 30000);
  t.truthy(web.metadata.uid);
  const stored = JSON.parse((await etcd.get('/registry/services/default/web'))!) as Service;
  t.is(stored.spec!.clusterIP, '10.254.0.10');
  await t.throwsAsync(c.putService({ metadata: { name: 'dup', namespace: 'default' }, spec: { clusterIP: '10.254.0.10', ports: [{ port: 1 }] } }), { message: /already allocated/ });

  // A watch from the list's resourceVersion sees the pod and the slice derived from its labels.
  const list = await c.call<{ metadata: { resourceVersion: string }; items: unknown[] }>('GET', '/apis/discovery.k8s.io/v1/endpointslices');
  const sliceEvents = watch(port, `/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${list.metadata.resourceVersion}`,
    (ev) => ev.some((e) => (e.object as EndpointSlice).endpoints?.length === 2));
  await c.putPod(pod('web-1', { app: 'web' }, '10.244.1.2'));
  await c.putPod(pod('web-2', { app: 'web' }, '10.244.2.2'));
  await c.putPod(pod('db-1', { app: 'db' }, '10.244.2.3'));
  const ev = await sliceEvents;
  const last = ev[ev.length - 1]!.object as EndpointSlice;
  t.is(last.metadata.name, 'web-lab');
  t.deepEqual(last.endpoints!.map((e) => e.addresses[0]), ['10.244.1.2', '10.244.2.2']);
  t.deepEqual(last.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
  t.true(ev.every((e) => Number(e.object.metadata.resourceVersion) > Number(list.metadata.resourceVersion)));

  // The informer a node's proxy runs reads the same API.
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: [{ name: 'l', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }], users: [{ name: 'l' }], contexts: [{ name: 'l', cluster: 'l', user: 'l' }], currentContext: 'l' });
  const seen = { services: new Map<string, Service>(), slices: new Map<string, EndpointSlice>(), synced: false };
  const inf = new InformerSource({ kubeConfig: kc, log });
  t.teardown(() => inf.stop());
  await inf.start({
    upsertService: (s) => { seen.services.set(s.metadata.name!, s); }, deleteService: (s) => { seen.services.delete(s.metadata.name!); },
    upsertSlice: (s) => { seen.slices.set(s.metadata.name!, s); }, deleteSlice: (s) => { seen.slices.delete(s.metadata.name!); },
    replaceAll: () => undefined, warn: () => undefined,
    synced: () => { seen.synced = true; },
  });
  t.true(seen.synced);
  t.deepEqual([...seen.services.keys()], ['web']);
  t.deepEqual([...seen.slices.keys()], ['web-lab']);
  // Relabel a pod: the slice shrinks and the informer hears it.
  await c.putPod(pod('web-2', { app: 'other' }, '10.244.2.2'));
  const until = Date.now() + 5000;
  while (seen.slices.get('web-lab')?.endpoints?.length !== 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(seen.slices.get('web-lab')!.endpoints!.map((e) => e.addresses[0]), ['10.244.1.2']);

  // The TCP listener (what node proxies reach) is read-only.
  const ro = await new Promise<number>((resolve) => {
    const req = request({ host: '127.0.0.1', port, method: 'DELETE', path: '/api/v1/namespaces/default/services/web' }, (res) => { res.resume(); resolve(res.statusCode!); });
    req.end();
  });
  t.is(ro, 405);

  // Deleting the Service removes its derived slice.
  await c.delete('services', 'default', 'web');
  const until2 = Date.now() + 5000;
  while (seen.slices.has('web-lab') && Date.now() < until2) await new Promise((r) => setTimeout(r, 50));
  t.false(seen.slices.has('web-lab'));
  await inf.stop();

  // Restart: state comes back from etcd; allocation continues; a too-old watch gets 410.
  const before = await c.call<{ metadata: { resourceVersion: string } }>('GET', '/api/v1/pods');
  await api.stop();
  api = new LabApi(opts);
  await api.start();
  t.deepEqual((await c.pods()).map((p) => p.metadata.name), ['db-1', 'web-1', 'web-2']);
  const next = await c.putService({ metadata: { name: 'b', namespace: 'default' }, spec: { ports: [{ port: 1 }] } });
  t.is(next.spec!.clusterIP, '10.254.0.10', 'the deleted web\'s address is free again');
  await c.putService({ metadata: { name: 'a', namespace: 'default' }, spec: { ports: [{ port: 1 }] } });
  const gone = await watch(port, `/api/v1/pods?watch=true&resourceVersion=${Number(before.metadata.resourceVersion) - 1}`, (e) => e.length > 0);
  t.is(gone[0]!.type, 'ERROR');
  t.is(gone[0]!.object.code, 410);
});
