// kube-proxy's chain names: prefix + the first 16 characters of the RFC 4648 base32 encoding of
// sha256(servicePortName + protocol [+ endpoint]). Must match kube-proxy byte for byte so that
// knet can take over (or hand back) a node's rules.
//
// SHA-256 is computed here (FIPS 180-4) rather than with node:crypto: a cold render of 10k
// services hashes 40k short strings, and crypto's per-call cost (argument checks, a Buffer per
// digest that the GC must track) was a fifth of the modelling time. Inputs are the ASCII names
// and addresses the model validated; anything else goes through node:crypto.
import { lazyModule } from '../util/lazy-module.ts';

const crypto = lazyModule<typeof import('node:crypto')>('node:crypto');

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function primes(n: number): number[] {
  const out: number[] = [];
  for (let c = 2; out.length < n; c++) if (out.every((p) => c % p !== 0)) out.push(c);
  return out;
}
/** First 32 bits of the fractional parts of the roots of the first primes (FIPS 180-4, 4.2.2 and 5.3.3). */
const fraction32 = (x: number) => ((x - Math.floor(x)) * 2 ** 32) | 0;
const K = Int32Array.from(primes(64), (p) => fraction32(Math.cbrt(p)));
const H0 = Int32Array.from(primes(8), (p) => fraction32(Math.sqrt(p)));

const W = new Int32Array(64);
const H = new Int32Array(8);
/** Message blocks for inputs of up to 247 bytes (4 blocks); longer ones go to node:crypto. */
const MSG = new Uint8Array(256);
const DIGEST10 = new Uint8Array(10);

function compress(at: number): void {
  for (let t = 0; t < 16; t++) {
    const i = at + t * 4;
    W[t] = (MSG[i]! << 24) | (MSG[i + 1]! << 16) | (MSG[i + 2]! << 8) | MSG[i + 3]!;
  }
  for (let t = 16; t < 64; t++) {
    const w15 = W[t - 15]!;
    const w2 = W[t - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    W[t] = (W[t - 16]! + s0 + W[t - 7]! + s1) | 0;
  }
  let a = H[0]!, b = H[1]!, c = H[2]!, d = H[3]!, e = H[4]!, f = H[5]!, g = H[6]!, h = H[7]!;
  for (let t = 0; t < 64; t++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[t]! + W[t]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g; g = f; f = e; e = (d + t1) | 0;
    d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  H[0] = (H[0]! + a) | 0; H[1] = (H[1]! + b) | 0; H[2] = (H[2]! + c) | 0; H[3] = (H[3]! + d) | 0;
  H[4] = (H[4]! + e) | 0; H[5] = (H[5]! + f) | 0; H[6] = (H[6]! + g) | 0; H[7] = (H[7]! + h) | 0;
}

/** The first 10 bytes of sha256(input), in a buffer reused by the next call. */
export function sha256Prefix10(input: string): Uint8Array {
  const n = input.length;
  let ascii = n <= 247;
  for (let i = 0; ascii && i < n; i++) {
    const c = input.charCodeAt(i);
    if (c > 127) ascii = false;
    else MSG[i] = c;
  }
  if (!ascii) {
    DIGEST10.set(crypto().hash('sha256', input, 'buffer').subarray(0, 10));
    return DIGEST10;
  }
  // Padding: 0x80, zeros, then the bit length as a 64-bit big-endian number (< 2^32 here).
  const blocks = (n + 9 + 63) >> 6;
  const end = blocks * 64;
  MSG[n] = 0x80;
  MSG.fill(0, n + 1, end - 4);
  const bits = n * 8;
  MSG[end - 4] = bits >>> 24; MSG[end - 3] = (bits >>> 16) & 255; MSG[end - 2] = (bits >>> 8) & 255; MSG[end - 1] = bits & 255;
  H.set(H0);
  for (let b = 0; b < blocks; b++) compress(b * 64);
  for (let i = 0; i < 10; i++) DIGEST10[i] = (H[i >> 2]! >>> (24 - (i & 3) * 8)) & 255;
  return DIGEST10;
}

/** Character codes of one chain name, reused: String.fromCharCode gives a flat string at once. */
const NAME = new Array<number>(25).fill(0);

/**
 * prefix + base32 of the first 10 bytes of sha256(input) (80 bits = exactly 16 characters, no
 * padding involved). Not memoised: the renderer keeps each service's chain names until its
 * objects change.
 */
export function hashedName(prefix: string, d: Uint8Array): string {
  const p = prefix.length;
  for (let i = 0; i < p; i++) NAME[i] = prefix.charCodeAt(i);
  let at = p;
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < 10; i++) {
    buffer = (buffer << 8) | d[i]!;
    bits += 8;
    while (bits >= 5) {
      NAME[at++] = ALPHABET.charCodeAt((buffer >>> (bits - 5)) & 31);
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  NAME.length = at;
  return String.fromCharCode.apply(null, NAME);
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
  const d = sha256Prefix10(portName + protocol);
  return { cluster: hashedName('KUBE-SVC-', d), local: hashedName('KUBE-SVL-', d), external: hashedName('KUBE-EXT-', d), firewall: hashedName('KUBE-FW-', d) };
}

export function endpointChain(portName: string, protocol: string, endpoint: string): string {
  return hashedName('KUBE-SEP-', sha256Prefix10(portName + protocol + endpoint));
}
