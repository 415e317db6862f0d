// Kubernetes' protobuf encoding, read for the two kinds kubectl's typed generators send it for:
// `kubectl create namespace` (a Namespace) and `kubectl create service ...` (a Service). The
// body is the "k8s\0" magic and a runtime.Unknown envelope (type meta, then the object's own
// message); each message is read by field number into the object's JSON form, with Go's
// zero values left out as its JSON encoding leaves them out. Any other kind, or a field this
// reader does not know, is refused with a clear error (send JSON), never dropped silently.
import { ApiError } from './errors.ts';

type Kind = 'string' | 'int32' | 'int64' | 'bool' | 'message' | 'map' | 'intOrString' | 'skip';

interface FieldSpec {
  name: string;
  kind: Kind;
  repeated?: boolean;
  /** A Go pointer field: present on the wire only when set, so its zero value is kept. */
  pointer?: boolean;
  message?: MessageSpec;
}

type MessageSpec = Record<number, FieldSpec>;

const f = (name: string, kind: Kind, o: Partial<FieldSpec> = {}): FieldSpec => ({ name, kind, ...o });

// Field numbers are those of Kubernetes' generated.proto files (core/v1, meta/v1, intstr).
const OBJECT_META: MessageSpec = {
  1: f('name', 'string'), 2: f('generateName', 'string'), 3: f('namespace', 'string'), 4: f('selfLink', 'skip'), 5: f('uid', 'skip'),
  6: f('resourceVersion', 'string'), 7: f('generation', 'skip'), 8: f('creationTimestamp', 'skip'), 9: f('deletionTimestamp', 'skip'),
  10: f('deletionGracePeriodSeconds', 'skip'), 11: f('labels', 'map'), 12: f('annotations', 'map'), 14: f('finalizers', 'string', { repeated: true }),
  17: f('managedFields', 'skip'),
};

const SERVICE_PORT: MessageSpec = {
  1: f('name', 'string'), 2: f('protocol', 'string'), 3: f('port', 'int32'), 4: f('targetPort', 'intOrString'), 5: f('nodePort', 'int32'), 6: f('appProtocol', 'string', { pointer: true }),
};

const SERVICE_SPEC: MessageSpec = {
  1: f('ports', 'message', { repeated: true, message: SERVICE_PORT }), 2: f('selector', 'map'), 3: f('clusterIP', 'string'), 4: f('type', 'string'),
  5: f('externalIPs', 'string', { repeated: true }), 7: f('sessionAffinity', 'string'), 8: f('loadBalancerIP', 'string'),
  9: f('loadBalancerSourceRanges', 'string', { repeated: true }), 10: f('externalName', 'string'), 11: f('externalTrafficPolicy', 'string'),
  12: f('healthCheckNodePort', 'int32'), 13: f('publishNotReadyAddresses', 'bool'),
  14: f('sessionAffinityConfig', 'message', { message: { 1: f('clientIP', 'message', { message: { 1: f('timeoutSeconds', 'int32', { pointer: true }) } }) } }),
  17: f('ipFamilyPolicy', 'string', { pointer: true }), 18: f('clusterIPs', 'string', { repeated: true }), 19: f('ipFamilies', 'string', { repeated: true }),
  20: f('allocateLoadBalancerNodePorts', 'bool', { pointer: true }), 21: f('loadBalancerClass', 'string', { pointer: true }),
  22: f('internalTrafficPolicy', 'string', { pointer: true }), 23: f('trafficDistribution', 'string', { pointer: true }),
};

// Status is the server's on create: read past it.
const KINDS: Record<string, MessageSpec> = {
  Namespace: { 1: f('metadata', 'message', { message: OBJECT_META }), 2: f('spec', 'message', { message: { 1: f('finalizers', 'string', { repeated: true }) } }), 3: f('status', 'skip') },
  Service: { 1: f('metadata', 'message', { message: OBJECT_META }), 2: f('spec', 'message', { message: SERVICE_SPEC }), 3: f('status', 'skip') },
};

const TYPE_META: MessageSpec = { 1: f('apiVersion', 'string'), 2: f('kind', 'string') };
const MAGIC = Buffer.from('k8s\0', 'latin1');

class WireError extends Error {}

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer, readonly end = buf.length) {}

  varint(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw new WireError('truncated varint');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result;
    }
    throw new WireError('varint too long');
  }

  bytes(): Buffer {
    const n = Number(this.varint());
    if (this.pos + n > this.end) throw new WireError('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) this.bytes();
    else if (wire === 1) this.pos += 8;
    else if (wire === 5) this.pos += 4;
    else throw new WireError(`unsupported wire type ${wire}`);
    if (this.pos > this.end) throw new WireError('truncated field');
  }
}

function signed(v: bigint, bits: 32 | 64): number {
  return Number(BigInt.asIntN(bits, v));
}

function readMap(buf: Buffer): [string, string] {
  const r = new Reader(buf);
  let key = '';
  let value = '';
  while (r.pos < r.end) {
    const tag = Number(r.varint());
    if (tag === (1 << 3 | 2)) key = r.bytes().toString('utf8');
    else if (tag === (2 << 3 | 2)) value = r.bytes().toString('utf8');
    else r.skip(tag & 7);
  }
  return [key, value];
}

function readIntOrString(buf: Buffer): number | string | undefined {
  const r = new Reader(buf);
  let type = 0;
  let intVal = 0;
  let strVal = '';
  while (r.pos < r.end) {
    const tag = Number(r.varint());
    const field = tag >> 3;
    if (field === 1) type = signed(r.varint(), 64);
    else if (field === 2) intVal = signed(r.varint(), 32);
    else if (field === 3) strVal = r.bytes().toString('utf8');
    else r.skip(tag & 7);
  }
  if (type === 1) return strVal === '' ? undefined : strVal;
  return intVal === 0 ? undefined : intVal;
}

function readMessage(buf: Buffer, spec: MessageSpec, path: string): Record<string, unknown> {
  const r = new Reader(buf);
  const out: Record<string, unknown> = {};
  while (r.pos < r.end) {
    const tag = Number(r.varint());
    const field = tag >> 3;
    const wire = tag & 7;
    const s = spec[field];
    if (!s) throw new ApiError(415, 'UnsupportedMediaType', `the lab API reads protobuf only for what kubectl create namespace and create service send; field ${field} of ${path || 'the object'} is not one of those: send JSON (kubectl create -f or apply -f)`);
    const at = path ? `${path}.${s.name}` : s.name;
    let value: unknown;
    switch (s.kind) {
      case 'skip': r.skip(wire); continue;
      case 'string': value = r.bytes().toString('utf8'); if (value === '' && !s.pointer && !s.repeated) continue; break;
      case 'int32': value = signed(r.varint(), 32); if (value === 0 && !s.pointer) continue; break;
      case 'int64': value = signed(r.varint(), 64); if (value === 0 && !s.pointer) continue; break;
      case 'bool': value = r.varint() !== 0n; if (value === false && !s.pointer) continue; break;
      case 'intOrString': value = readIntOrString(r.bytes()); if (value === undefined) continue; break;
      case 'message': value = readMessage(r.bytes(), s.message!, at); break;
      case 'map': {
        const [k, v] = readMap(r.bytes());
        out[s.name] ??= {};
        (out[s.name] as Record<string, string>)[k] = v;
        continue;
      }
    }
    if (s.repeated) ((out[s.name] ??= []) as unknown[]).push(value);
    else out[s.name] = value;
  }
  return out;
}

/** Decodes a protobuf request body into the object's JSON form (Namespace or Service only). */
export function decodeProtobuf(body: Buffer): Record<string, unknown> {
  if (body.length < MAGIC.length || !body.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new ApiError(400, 'BadRequest', 'the body is not Kubernetes protobuf (it does not start with "k8s\\0")');
  }
  try {
    // The envelope: type meta, then the object's bytes in field 2.
    const r = new Reader(body.subarray(MAGIC.length));
    let typeMeta: Record<string, unknown> = {};
    let raw: Buffer | null = null;
    while (r.pos < r.end) {
      const tag = Number(r.varint());
      const field = tag >> 3;
      if (field === 1) typeMeta = readMessage(r.bytes(), TYPE_META, 'typeMeta');
      else if (field === 2) raw = r.bytes();
      else r.skip(tag & 7);
    }
    const kind = String(typeMeta.kind ?? '');
    const spec = Object.hasOwn(KINDS, kind) ? KINDS[kind] : undefined;
    if (!spec || typeMeta.apiVersion !== 'v1' || !raw) {
      throw new ApiError(415, 'UnsupportedMediaType', `the lab API reads protobuf only for Namespaces and Services (kubectl create namespace|service), not ${kind || 'this body'}: send JSON (kubectl create -f or apply -f)`);
    }
    return { apiVersion: 'v1', kind, ...readMessage(raw, spec, '') };
  } catch (err) {
    if (err instanceof WireError) throw new ApiError(400, 'BadRequest', `the protobuf body is malformed: ${err.message}`);
    throw err;
  }
}
