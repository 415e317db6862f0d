// HTTP plumbing of the lab API: bounded request bodies (kube-apiserver refuses bodies over
// 3 MiB with 413; so does the lab API, on every listener, without reading the rest), JSON
// responses and Status errors, and the content negotiation kubectl relies on (Table for
// `kubectl get`, aggregated discovery for `/api` and `/apis`).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, errorStatus } from './errors.ts';
import type { IncludeObject } from './tables.ts';

/** kube-apiserver's limit on a request body. */
export const MAX_BODY_BYTES = 3 * 1024 * 1024;

function tooLarge(limit: number): ApiError {
  return new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`);
}

/** Reads a body of at most `limit` bytes; a larger one is refused as soon as it is known to be. */
export async function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export function parseJsonBody(buf: Buffer): unknown {
  const text = buf.toString('utf8');
  if (text.trim() === '') throw new ApiError(400, 'BadRequest', 'the request body is empty');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'BadRequest', `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

export function sendJson(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers }).end(text);
}

/** Answers with the error's Status; a refused body also closes the connection so it is not read. */
export function sendError(req: IncomingMessage, res: ServerResponse, err: ApiError): void {
  if (res.headersSent) { res.destroy(); return; }
  const headers: Record<string, string> = {};
  if (err.details?.retryAfterSeconds) headers['Retry-After'] = String(err.details.retryAfterSeconds);
  if (err.code === 413) {
    headers.Connection = 'close';
    const socket = req.socket;
    res.on('finish', () => socket?.destroy());
  }
  sendJson(res, err.code, errorStatus(err), headers);
}

/** `Warning` headers, as kube-apiserver sends them (kubectl prints "Warning: ..."). */
export function warningHeaders(warnings: string[]): Record<string, string> {
  return warnings.length ? { Warning: warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(', ') } : {};
}

interface MediaRange { type: string; params: Record<string, string> }

function accepted(req: IncomingMessage): MediaRange[] {
  return String(req.headers.accept ?? '').split(',').map((part) => {
    const [type, ...params] = part.trim().split(';');
    return { type: (type ?? '').trim(), params: Object.fromEntries(params.map((p) => p.trim().split('=') as [string, string])) };
  });
}

/** The Table form kubectl asks for (`as=Table;g=meta.k8s.io;v=v1`), with the row object it wants. */
export function tableRequest(req: IncomingMessage, query: URLSearchParams): IncludeObject | null {
  const wants = accepted(req).some((m) => m.params.as === 'Table' && m.params.g === 'meta.k8s.io' && (m.params.v === 'v1' || m.params.v === 'v1beta1'));
  if (!wants) return null;
  const include = query.get('includeObject');
  return include === 'None' || include === 'Object' ? include : 'Metadata';
}

/** Whether the client takes aggregated discovery (`as=APIGroupDiscoveryList`, v2). */
export function wantsAggregatedDiscovery(req: IncomingMessage): boolean {
  return accepted(req).some((m) => m.params.as === 'APIGroupDiscoveryList' && m.params.g === 'apidiscovery.k8s.io' && m.params.v === 'v2');
}

/** 406 when a client accepts nothing the lab API speaks (it speaks JSON only, no protobuf). */
export function checkAcceptsJson(req: IncomingMessage): void {
  const ranges = accepted(req);
  if (!req.headers.accept) return;
  if (ranges.some((m) => m.type === 'application/json' || m.type === '*/*' || m.type === 'application/*')) return;
  throw new ApiError(406, 'NotAcceptable', `only the following media types are accepted: application/json (asked for ${req.headers.accept})`);
}
