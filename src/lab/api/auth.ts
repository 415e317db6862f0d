// Who may do what on the lab API's network listener, pure. Clients authenticate with a bearer
// token from a file in kube-apiserver's static token format (`token,user,uid,"group1,group2"`);
// group system:masters may do anything, group system:nodes (each node's proxy and agent) may
// read everything and change only its own Node and its status, as Kubernetes' node authorizer
// allows a kubelet. No token, or an unknown one, is 401; a forbidden request is 403. The local
// socket in the lab directory is trusted (only root reaches it).
import { qualifiedResource, type ResourceDef } from './resources.ts';

export interface User { name: string; groups: string[] }

export const LOCAL_ADMIN: User = { name: 'knet-lab-admin', groups: ['system:masters'] };
export const MASTERS = 'system:masters';
export const NODES = 'system:nodes';
const NODE_PREFIX = 'system:node:';

function csvFields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of line) {
    if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) { out.push(cur); cur = ''; }
    else cur += c;
  }
  out.push(cur);
  return out.map((f) => f.trim());
}

/** Parses a static token file; a malformed line is an error naming it. */
export function parseTokenFile(text: string, source = 'token file'): Map<string, User> {
  const tokens = new Map<string, User>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const [token, name, , groups] = csvFields(line);
    if (!token || !name) throw new Error(`${source}:${i + 1}: expected token,user,uid[,"groups"]`);
    tokens.set(token, { name, groups: groups ? groups.split(',').map((g) => g.trim()).filter(Boolean) : [] });
  });
  return tokens;
}

/** One line of a static token file. */
export function tokenLine(token: string, user: string, groups: string[]): string {
  return `${token},${user},${user},"${groups.join(',')}"`;
}

export function authenticate(tokens: ReadonlyMap<string, User>, authorization: string | undefined): User | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? tokens.get(m[1]!) ?? null : null;
}

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection';
const READS: Verb[] = ['get', 'list', 'watch'];

export interface Request { verb: Verb; def: ResourceDef; namespace?: string; name?: string; subresource?: string }

/** null when allowed; else the reason, worded as Kubernetes' RBAC denials are. */
export function authorize(user: User, r: Request): string | null {
  if (user.groups.includes(MASTERS)) return null;
  const resource = r.subresource ? `${r.def.name}/${r.subresource}` : r.def.name;
  const scope = r.namespace ? `in the namespace "${r.namespace}"` : 'at the cluster scope';
  const denied = `User "${user.name}" cannot ${r.verb} resource "${resource}" in API group "${r.def.group}" ${scope}`;
  if (!user.groups.includes(NODES)) return denied;
  if (READS.includes(r.verb)) return null;
  if (r.def.name === 'nodes' && ['create', 'update', 'patch'].includes(r.verb)) {
    const own = user.name.startsWith(NODE_PREFIX) ? user.name.slice(NODE_PREFIX.length) : null;
    if (own !== null && r.name === own) return null;
    return `${denied}: a node may change only its own Node (${own ?? 'none'})`;
  }
  return denied;
}

export function forbiddenMessage(r: Request, reason: string): string {
  return `${qualifiedResource(r.def)}${r.name ? ` "${r.name}"` : ''} is forbidden: ${reason}`;
}
