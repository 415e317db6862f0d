// conntrack(8) adapter: delete flow entries by filter, optionally inside a named namespace.
// Arguments are built from validated values as an array (execFile, no shell).
import { isIP } from 'node:net';
import { ExecError, run } from './exec.ts';
import { assertNetnsName } from './netns.ts';

export interface ConntrackFilter {
  protocol: 'udp' | 'sctp' | 'tcp';
  family?: 'IPv4' | 'IPv6';
  /** Original destination (the service IP the client dialled). */
  origDst?: string;
  /** Address the flow was DNATed to (the endpoint). */
  dstNat?: string;
  /** Original destination port (a node port). */
  dport?: number;
}

export function conntrackDeleteArgs(f: ConntrackFilter): string[] {
  const args = ['-D', '-p', f.protocol];
  if (f.family === 'IPv6') args.push('-f', 'ipv6');
  if (f.origDst !== undefined) {
    if (!isIP(f.origDst)) throw new Error(`conntrack: invalid address ${JSON.stringify(f.origDst)}`);
    args.push('--orig-dst', f.origDst);
  }
  if (f.dport !== undefined) {
    if (!Number.isInteger(f.dport) || f.dport < 1 || f.dport > 65535) throw new Error(`conntrack: invalid port ${f.dport}`);
    args.push('--dport', String(f.dport));
  }
  if (f.dstNat !== undefined) {
    if (!isIP(f.dstNat)) throw new Error(`conntrack: invalid address ${JSON.stringify(f.dstNat)}`);
    args.push('--dst-nat', f.dstNat);
  }
  return args;
}

/** Deletes matching entries; returns how many were deleted (0 is not an error). */
export async function conntrackDelete(netns: string | null | undefined, f: ConntrackFilter): Promise<number> {
  const args = conntrackDeleteArgs(f);
  let file = 'conntrack';
  let argv = args;
  if (netns) {
    assertNetnsName(netns);
    file = 'ip';
    argv = ['netns', 'exec', netns, 'conntrack', ...args];
  }
  try {
    const { stderr } = await run(file, argv, { timeoutMs: 30_000 });
    return parseDeleted(stderr);
  } catch (e) {
    // conntrack exits 1 when nothing matched.
    if (e instanceof ExecError && /0 flow entries have been deleted/.test(e.stderr)) return 0;
    throw e;
  }
}

function parseDeleted(stderr: string): number {
  const m = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(stderr);
  return m ? Number(m[1]) : 0;
}
