// FNV-1a (32 bit) as 8 hex digits: stable short names (host veths, chains) without loading
// node:crypto, which costs a CNI call several milliseconds of start-up. Not for security.
export function fnv1aHex(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
