// knet: the single CLI entry. Each sub-command lives in its own module and is loaded lazily,
// so `knet rules` never pays for the Kubernetes client or etcd.
import { buildProgram } from './program.ts';

buildProgram().parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`knet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
