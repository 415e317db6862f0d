// `knet lab`: a multi-node cluster of network namespaces on one machine. Wiring only; the lab
// lives in src/lab (plan and checks are pure, kernel and process work in small adapters).
import type { Command } from 'commander';

interface DirOpt { dir?: string }

const say = (l: string) => process.stderr.write(`${l}\n`);

async function dirOf(o: DirOpt): Promise<string> {
  const { labDir } = await import('../lab/state.ts');
  return labDir(o.dir);
}

function intArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function registerLab(program: Command): void {
  const lab = program
    .command('lab')
    .description('a multi-node cluster in network namespaces on this machine: etcd, knet agent and proxy per node, pods through the CNI plugin')
    .enablePositionalOptions()
    .addHelpText('after', `
The lab's API is a small stand-in for kube-apiserver backed by the lab's own etcd (Namespaces,
Nodes, Pods, Services, Endpoints, EndpointSlices over the Kubernetes REST API, enough for
kubectl and informers); it is not a Kubernetes. With --subnet-manager kube (the default) it
also allocates each Node's podCIDR as kube-controller-manager does, and the agents publish
flannel's annotations on their Nodes; with etcd the agents lease subnets in a second etcd.
Everything lives in namespaces named knl-<labid>-* and files under --dir (default /run/knet-lab,
or $KNET_LAB_DIR). Needs root.

Examples:
  knet lab up --nodes 3 && knet lab check
  knet lab up --subnet-manager etcd --backend ovs-gre
  knet lab status
  knet lab apply -f scale-web.yaml
  knet lab kubectl get svc,endpointslices -A -o wide
  knet lab exec client-1 -- curl -s 10.254.0.10
  knet lab down`);
  const dirOption = ['--dir <DIR>', 'lab directory (default $KNET_LAB_DIR or /run/knet-lab)'] as const;

  lab.command('up')
    .description('start a lab (harmless when it is already up)')
    .option('--nodes <n>', 'number of nodes', intArg('--nodes', 1, 100), 3)
    .option('--backend <backend>', 'overlay backend: vxlan, or ovs-gre (an Open vSwitch pair per node, userspace datapath)', 'vxlan')
    .option('--proxy-mode <mode>', 'proxy mode: iptables, nftables or userspace (written to each node\'s KubeProxyConfiguration)', 'iptables')
    .option('--subnet-manager <kind>', 'where node pod subnets come from: kube (the lab API allocates each Node\'s podCIDR, agents run --kube-subnet-mgr with flannel\'s annotations) or etcd (agents lease subnets in the lab\'s flannel etcd)', 'kube')
    .option('--ns-prefix <prefix>', 'namespace name prefix (default knl-<labid>-)')
    .option('--no-workload', 'do not create the default pods and services')
    .option(...dirOption)
    .action(async (o: DirOpt & { nodes: number; backend: string; proxyMode: string; subnetManager: string; nsPrefix?: string; workload: boolean }) => {
      const { labUp, abort, Interrupted } = await import('../lab/lifecycle.ts');
      const dir = await dirOf(o);
      const onSignal = () => { abort.requested = true; say('stopping: cleaning up what was made so far'); };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const state = await labUp({ dir, nodes: o.nodes, backend: o.backend, proxyMode: o.proxyMode, subnetManager: o.subnetManager, ...(o.nsPrefix ? { nsPrefix: o.nsPrefix } : {}), noWorkload: !o.workload, progress: say });
        const { kubectlHint } = await import('../lab/commands.ts');
        say(`next: knet lab status${o.dir ? ` --dir ${dir}` : ''}; knet lab check${o.dir ? ` --dir ${dir}` : ''}`);
        say(kubectlHint(state));
      } catch (err) {
        if (err instanceof Interrupted) { process.exitCode = 130; return; }
        throw err;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });

  lab.command('down')
    .description('stop the lab and remove its namespaces, processes and files')
    .option(...dirOption)
    .action(async (o: DirOpt) => {
      const { labDown } = await import('../lab/lifecycle.ts');
      await labDown(await dirOf(o), say);
    });

  lab.command('status')
    .description('nodes (subnet, VTEP, public IP), pods (IP, node), services (VIPs, ports, endpoints)')
    .option(...dirOption)
    .action(async (o: DirOpt) => {
      const { labStatus } = await import('../lab/commands.ts');
      process.stdout.write(await labStatus(await dirOf(o)));
    });

  lab.command('apply')
    .description('create or update Services, EndpointSlices and Pods (name, namespace, labels, spec.nodeName, ports)')
    .requiredOption('-f, --file <FILE>', 'YAML or JSON, multi-document or kind: List; - for stdin')
    .option(...dirOption)
    .action(async (o: DirOpt & { file: string }) => {
      const { labApply } = await import('../lab/commands.ts');
      await labApply(await dirOf(o), o.file, (l) => process.stdout.write(`${l}\n`));
    });

  lab.command('delete')
    .description('delete objects: knet lab delete KIND NAME... or -f FILE (KIND: pod, service, endpointslice)')
    .argument('[kind]', 'pod, service or endpointslice')
    .argument('[names...]', 'object names')
    .option('-f, --file <FILE>', 'delete the objects named in this manifest')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option(...dirOption)
    .action(async (kind: string | undefined, names: string[], o: DirOpt & { file?: string; namespace: string }) => {
      const { labDelete, kindOf, deleteTargetsFromFile } = await import('../lab/commands.ts');
      const targets = o.file ? deleteTargetsFromFile(o.file) : [];
      if (kind) {
        if (names.length === 0) throw new Error('give at least one name: knet lab delete KIND NAME...');
        const k = kindOf(kind);
        for (const n of names) targets.push({ kind: k, namespace: o.namespace, name: n });
      }
      if (targets.length === 0) throw new Error('nothing to delete: knet lab delete KIND NAME... or -f FILE');
      const missing = await labDelete(await dirOf(o), targets, (l) => process.stdout.write(`${l}\n`));
      if (missing) process.exitCode = 1;
    });

  lab.command('exec')
    .description('run a command in a pod\'s network namespace (or a node\'s: node-N, or "outside")')
    .argument('<target>', 'pod name, node name, or "outside"')
    .argument('<cmd...>', 'command and arguments (after --)')
    .option('-n, --namespace <ns>', 'pod namespace', 'default')
    .option(...dirOption)
    .action(async (target: string, cmd: string[], o: DirOpt & { namespace: string }) => {
      const { labExec } = await import('../lab/commands.ts');
      process.exitCode = await labExec(await dirOf(o), target, o.namespace, cmd);
    });

  lab.command('check')
    .description('real traffic: pod to pod across every node pair, every Service port from a pod (spread per endpoint), NodePorts from outside, affinity, UDP')
    .option('--wait <seconds>', 'keep retrying failed probes this long', intArg('--wait', 0, 3600), 20)
    .option('--json', 'print the results as JSON')
    .option(...dirOption)
    .action(async (o: DirOpt & { wait: number; json?: boolean }) => {
      const { labCheck, formatCheckTable } = await import('../lab/commands.ts');
      const r = await labCheck(await dirOf(o), { waitMs: o.wait * 1000 });
      if (o.json) process.stdout.write(JSON.stringify(r.rows.map((x) => ({ id: x.probe.id, check: x.probe.check, from: x.probe.from, to: x.probe.to, ...x.verdict })), null, 2) + '\n');
      else process.stdout.write(formatCheckTable(r.rows));
      say(`check took ${r.seconds.toFixed(1)}s`);
      if (!r.passed) process.exitCode = 1;
    });

  lab.command('kubectl')
    .description('run kubectl against the lab API (in the lab\'s underlay namespace, with the lab\'s administrator kubeconfig)')
    .argument('[args...]', 'kubectl arguments (options of this command, like --dir, go before them)')
    .option(...dirOption)
    .passThroughOptions()
    .allowUnknownOption()
    .helpOption('--knet-help', 'help for this command (kubectl\'s own --help passes through)')
    .action(async (args: string[], o: DirOpt) => {
      const { labKubectl } = await import('../lab/commands.ts');
      process.exitCode = await labKubectl(await dirOf(o), args);
    });

  // The lab API daemon, started by `lab up` inside the lab's underlay namespace.
  lab.command('_api', { hidden: true })
    .option(...dirOption)
    .action(async (o: DirOpt) => {
      const { runLabApi } = await import('../lab/api-main.ts');
      await runLabApi(await dirOf(o));
    });
}
