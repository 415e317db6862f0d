// Errors as kube-apiserver reports them: a Status object with the HTTP code, a reason kubectl
// understands ("Error from server (NotFound): ..."), and for 422 the field errors as causes.
import { qualifiedResource, type ResourceDef } from './resources.ts';

export interface StatusCause { reason: string; message: string; field?: string }
export interface StatusDetails { name?: string; group?: string; kind?: string; uid?: string; causes?: StatusCause[]; retryAfterSeconds?: number }

export class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: StatusDetails) { super(message); }
}

export function statusBody(code: number, reason: string, message: string, details?: StatusDetails): Record<string, unknown> {
  const body: Record<string, unknown> = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details) body.details = details;
  return body;
}

export function errorStatus(err: ApiError): Record<string, unknown> {
  return statusBody(err.code, err.reason, err.message, err.details);
}

const detailsOf = (def: ResourceDef, name: string): StatusDetails => (def.group ? { name, group: def.group, kind: def.name } : { name, kind: def.name });

export function notFound(def: ResourceDef, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${qualifiedResource(def)} "${name}" not found`, detailsOf(def, name));
}

export function alreadyExists(def: ResourceDef, name: string): ApiError {
  return new ApiError(409, 'AlreadyExists', `${qualifiedResource(def)} "${name}" already exists`, detailsOf(def, name));
}

export function conflict(def: ResourceDef, name: string, why = 'the object has been modified; please apply your changes to the latest version and try again'): ApiError {
  return new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(def)} "${name}": ${why}`, detailsOf(def, name));
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, 'BadRequest', message);
}

export function forbidden(def: ResourceDef | null, name: string | undefined, message: string): ApiError {
  const what = def ? `${qualifiedResource(def)}${name ? ` "${name}"` : ''} is forbidden` : 'forbidden';
  return new ApiError(403, 'Forbidden', `${what}: ${message}`, def ? detailsOf(def, name ?? '') : undefined);
}

/** A field error as kube-apiserver's validation words it. */
export type FieldErrorType = 'Invalid' | 'Required' | 'Duplicate' | 'NotSupported' | 'Forbidden' | 'TooLong' | 'TooMany';

export interface FieldError { type: FieldErrorType; field: string; value?: unknown; detail?: string }

const TYPE_TEXT: Record<FieldErrorType, [string, string]> = {
  Invalid: ['FieldValueInvalid', 'Invalid value'],
  Required: ['FieldValueRequired', 'Required value'],
  Duplicate: ['FieldValueDuplicate', 'Duplicate value'],
  NotSupported: ['FieldValueNotSupported', 'Unsupported value'],
  Forbidden: ['FieldValueForbidden', 'Forbidden'],
  TooLong: ['FieldValueTooLong', 'Too long'],
  TooMany: ['FieldValueTooMany', 'Too many'],
};

function showValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === undefined) return 'null';
  const text = JSON.stringify(v);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/** "Invalid value: 0: must be between 1 and 65535, inclusive" (the cause's message). */
export function fieldErrorBody(e: FieldError): string {
  const [, text] = TYPE_TEXT[e.type];
  const withValue = e.type === 'Invalid' || e.type === 'Duplicate' || e.type === 'NotSupported';
  return [text, ...(withValue ? [showValue(e.value)] : []), ...(e.detail ? [e.detail] : [])].join(': ');
}

export function fieldErrorText(e: FieldError): string {
  return `${e.field}: ${fieldErrorBody(e)}`;
}

/** 422 Invalid, e.g. `Service "web" is invalid: spec.ports[0].port: Invalid value: 0: ...`. */
export function invalid(def: ResourceDef, name: string, errors: FieldError[]): ApiError {
  const texts = errors.map(fieldErrorText);
  const message = `${def.kind} "${name}" is invalid: ${texts.length === 1 ? texts[0] : `[${texts.join(', ')}]`}`;
  const details: StatusDetails = { name, kind: def.kind, causes: errors.map((e) => ({ reason: TYPE_TEXT[e.type][0], message: fieldErrorBody(e), field: e.field })) };
  if (def.group) details.group = def.group;
  return new ApiError(422, 'Invalid', message, details);
}
