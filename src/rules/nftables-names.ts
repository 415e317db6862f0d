// kube-proxy's nftables object names: a readable base "ns/svc/proto/port" (an endpoint adds
// "__ip/port", with an IPv6 address's ":" written as "." since nft names cannot hold colons),
// prefixed with the first 8 characters of the base32 SHA-256 of that base, so that names that
// differ in one digit still look different and a truncated name stays unique. Must match
// kube-proxy byte for byte so that knet can take over (or hand back) a node's table.
import { hashedName, sha256Prefix10 } from './names.ts';
import type { ServicePortInfo } from './model.ts';

/** nft's longest object name (NFT_NAME_MAXLEN less the final NUL) less the longest prefix. */
const BASE_MAX = 256 - 16;

/** The first 8 characters of the base32 SHA-256 of the text. */
const hash8 = (text: string) => hashedName('', sha256Prefix10(text)).slice(0, 8);

function hashAndTruncate(name: string): string {
  const full = `${hash8(name)}-${name}`;
  return full.length > BASE_MAX ? `${full.slice(0, BASE_MAX - 3)}...` : full;
}

/** The Service's port name alone ("" for an unnamed port); portName is "ns/name:port" or "ns/name". */
export function rawPortName(s: Pick<ServicePortInfo, 'service' | 'portName'>): string {
  return s.portName.length > s.service.length ? s.portName.slice(s.service.length + 1) : '';
}

/** "HASH-ns/svc/proto/port": the part after "service-", "local-", "external-" or "firewall-". */
export function nftServicePortBase(service: string, port: string, protocol: string): string {
  return hashAndTruncate(`${service}/${protocol}/${port}`);
}

/** "HASH-ns/svc/proto/port__ip/port": the part after "endpoint-" or "affinity-". */
export function nftEndpointBase(service: string, port: string, protocol: string, ip: string, targetPort: number): string {
  return hashAndTruncate(`${service}/${protocol}/${port}__${ip.replaceAll(':', '.')}/${targetPort}`);
}

export interface NftPortChains {
  cluster: string;
  local: string;
  external: string;
  firewall: string;
}

export function nftPortChains(s: Pick<ServicePortInfo, 'service' | 'portName' | 'protocol'>): NftPortChains {
  const base = nftServicePortBase(s.service, rawPortName(s), s.protocol);
  return { cluster: `service-${base}`, local: `local-${base}`, external: `external-${base}`, firewall: `firewall-${base}` };
}

/** Service and endpoint chains are the only names with a "/": nothing of the fixed table has one. */
export function isNftServiceChain(name: string): boolean {
  return name.includes('/');
}

export function isNftAffinitySet(name: string): boolean {
  return name.startsWith('affinity-');
}
