// What the proxy (the control plane, Node) and its forwarder processes (the data path, Bun)
// say to each other: one JSON object per line, proxy -> forwarder on the forwarder's stdin,
// replies on its stdout. The forwarder exits when its stdin closes (the proxy is gone).
import { mustParseIP } from '../../../util/ip.ts';

/** A service port's listener, as the proxy wants it served. */
export interface PortSpec {
  protocol: 'tcp' | 'udp';
  /** Metrics label and log name ("ns/name:port"). */
  name: string;
  bindHost: string;
  /** 0: the kernel picks (the first forwarder); the others join the picked port. */
  port: number;
  /** SO_REUSEPORT, so several forwarders accept on the same port (TCP without affinity). */
  shared: boolean;
  /** ClientIP affinity timeout; 0: none. */
  stickySeconds: number;
  endpoints: readonly string[];
  /** TCP: no byte either way for this long resets both sides. */
  idleMs: number;
  /** TCP: keepalive idle time on both sides (armed on connections older than a sweep). */
  keepAliveMs: number;
  /** TCP: per-try dial timeouts (the length bounds the tries). */
  dialTimeoutsMs: readonly number[];
  /** UDP: flows idle this long go; at most this many per port. */
  udpIdleMs: number;
  maxFlows: number;
  /** UDP: the service socket's buffers. */
  bufferBytes: number;
}

/** What one port counted since the last report. */
export interface PortCounts {
  accepted: number;
  dialFailures: number;
  noEndpoint: number;
  /** Bytes to the endpoint and to the client. */
  up: number;
  down: number;
  upPackets: number;
  downPackets: number;
  evicted: number;
}

export const noCounts = (): PortCounts => ({ accepted: 0, dialFailures: 0, noEndpoint: 0, up: 0, down: 0, upPackets: 0, downPackets: 0, evicted: 0 });

export type ToForwarder =
  | { t: 'listen'; id: number; key: string; spec: PortSpec }
  | { t: 'update'; key: string; endpoints: readonly string[]; stickySeconds: number }
  | { t: 'close'; key: string }
  | { t: 'report'; id: number };

export type FromForwarder =
  | { t: 'listening'; id: number; key: string; port: number }
  | { t: 'failed'; id: number; key: string; error: string }
  | { t: 'report'; id: number; ports: Array<{ key: string; counts: PortCounts; active: number; flows: number }> };

/** Whether every entry is an IPv4 "ip:port" the forwarder can dial (port 1-65535), by the parser its sockaddrs use. */
function validEndpoints(list: unknown): boolean {
  return Array.isArray(list) && list.every((e) => {
    if (typeof e !== 'string') return false;
    const colon = e.lastIndexOf(':');
    const port = e.slice(colon + 1);
    try { mustParseIP(e.slice(0, colon), { syntax: 'strict', family: 4 }); } catch { return false; }
    return /^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535;
  });
}

const validSticky = (s: unknown) => Number.isInteger(s) && (s as number) >= 0;

/**
 * What is wrong with a listen request's spec (the field's name), or null. The proxy validates
 * what it sends; the forwarder checks again, so a bad message is refused whole and never
 * half-applied in the data path.
 */
export function invalidSpec(s: PortSpec): string | null {
  if (typeof s !== 'object' || s === null) return 'spec';
  if (s.protocol !== 'tcp' && s.protocol !== 'udp') return 'protocol';
  if (!Number.isInteger(s.port) || s.port < 0 || s.port > 65535) return 'port';
  if (!validEndpoints(s.endpoints)) return 'endpoints';
  if (!validSticky(s.stickySeconds)) return 'stickySeconds';
  if (!Array.isArray(s.dialTimeoutsMs) || !s.dialTimeoutsMs.length || !s.dialTimeoutsMs.every((t) => typeof t === 'number' && t > 0)) return 'dialTimeoutsMs';
  for (const k of ['idleMs', 'udpIdleMs', 'maxFlows'] as const) if (!(typeof s[k] === 'number' && s[k] > 0)) return k;
  return null;
}

/** What is wrong with an update (the field's name), or null. */
export function invalidUpdate(m: Extract<ToForwarder, { t: 'update' }>): string | null {
  if (!validEndpoints(m.endpoints)) return 'endpoints';
  if (!validSticky(m.stickySeconds)) return 'stickySeconds';
  return null;
}
