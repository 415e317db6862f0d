// kube-proxy's chain names: prefix + the first 16 characters of the RFC 4648 base32 encoding of
// sha256(servicePortName + protocol [+ endpoint]). Must match kube-proxy byte for byte so that
// knet can take over (or hand back) a node's rules.
import { hash } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * base32 of the first 10 bytes (80 bits = exactly 16 characters, no padding involved). Not
 * memoised: the renderer keeps each service's model (names included) until its objects change.
 */
function hash16(input: string): string {
  // One-shot hash: about twice as fast as createHash() for inputs this small (40k per 10k services).
  const d = hash('sha256', input, 'buffer');
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < 10; i++) {
    buffer = (buffer << 8) | d[i]!;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  return out;
}

export const CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-SEP-'] as const;

export function isServiceChainName(name: string): boolean {
  return CHAIN_PREFIXES.some((p) => name.startsWith(p));
}

export interface ServicePortChains {
  cluster: string;
  local: string;
  external: string;
  firewall: string;
}

/** portName is "ns/name:port" or "ns/name"; protocol lower case. */
export function servicePortChains(portName: string, protocol: string): ServicePortChains {
  const h = hash16(portName + protocol);
  return { cluster: `KUBE-SVC-${h}`, local: `KUBE-SVL-${h}`, external: `KUBE-EXT-${h}`, firewall: `KUBE-FW-${h}` };
}

export function endpointChain(portName: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${hash16(portName + protocol + endpoint)}`;
}
