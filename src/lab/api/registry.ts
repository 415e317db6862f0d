// The REST semantics of the lab API, independent of HTTP: create, update (main resource or
// status), patch, delete and delete-collection, each going decode -> defaults -> what the write
// may change -> validation -> allocation -> compare-and-swap store write, as kube-apiserver's
// generic registry does. Writes are serialized (allocation reads what is stored).
import type { Logger } from '../../util/log.ts';
import { allocateService, keepAllocated, type ServiceRanges } from './allocate.ts';
import { ApiError, badRequest, conflict, forbidden, invalid, notFound } from './errors.ts';
import { jsonPatch, mergePatch, strategicMergePatch, type PatchType } from './patch.ts';
import { apiVersionOf, resourceDef, type ResourceDef } from './resources.ts';
import { decodeObject, type FieldValidation } from './schema.ts';
import { fieldsMatch, labelsMatch, type FieldRequirement, type LabelRequirement } from './selectors.ts';
import type { Obj, ObjectStore } from './store.ts';
import { applyDefaults, generateName, now, prepareForCreate, prepareForUpdate } from './strategy.ts';
import { validateObject } from './validate.ts';

export interface WriteOptions {
  dryRun?: boolean;
  fieldValidation?: FieldValidation;
}

export interface WriteResult { object: Obj; warnings: string[]; created?: boolean }

const NAMESPACES = resourceDef('namespaces');
/** Namespaces kube-apiserver refuses to delete. */
export const PROTECTED_NAMESPACES = ['default', 'kube-system', 'kube-public'];

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v));

export class Registry {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly store: ObjectStore, private readonly ranges: ServiceRanges, private readonly log: Logger) {}

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  get(def: ResourceDef, namespace: string | undefined, name: string): Obj {
    const o = this.store.get(def, namespace, name);
    if (!o) throw notFound(def, name);
    return o;
  }

  list(def: ResourceDef, namespace: string | undefined, labels: LabelRequirement[], fields: FieldRequirement[]): Obj[] {
    return this.store.list(def, namespace)
      .filter((o) => labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o))
      .sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
  }

  /** Type-checks a body against the kind's fields; unknown fields are refused, warned about or dropped. */
  private decode(def: ResourceDef, body: unknown, mode: FieldValidation, warnings: string[]): Obj {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest(`the body must be a JSON object (a ${def.kind})`);
    const b = body as Record<string, unknown>;
    if (b.kind !== undefined && b.kind !== def.kind) throw badRequest(`the kind in the body (${String(b.kind)}) does not match the resource's kind (${def.kind})`);
    if (b.apiVersion !== undefined && b.apiVersion !== apiVersionOf(def)) throw badRequest(`the API version in the data (${String(b.apiVersion)}) does not match the expected API version (${apiVersionOf(def)})`);
    let decoded;
    try {
      decoded = decodeObject(def.model, body);
    } catch (err) {
      if (err instanceof ApiError) throw badRequest(`${def.kind} in version "${def.version}" cannot be handled as a ${def.kind}: ${err.message}`);
      throw err;
    }
    if (decoded.unknownFields.length) {
      if (mode === 'Strict') throw badRequest(`strict decoding error: ${decoded.unknownFields.map((f) => `unknown field "${f}"`).join(', ')}`);
      if (mode === 'Warn') warnings.push(...decoded.unknownFields.map((f) => `unknown field "${f}"`));
    }
    const obj = decoded.value as Obj;
    obj.apiVersion = apiVersionOf(def);
    obj.kind = def.kind;
    obj.metadata ??= {} as Obj['metadata'];
    return obj;
  }

  private checkNamespace(def: ResourceDef, namespace: string | undefined, obj: Obj): void {
    if (!def.namespaced) { delete obj.metadata.namespace; return; }
    if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== '' && obj.metadata.namespace !== namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    obj.metadata.namespace = namespace;
  }

  /** New objects need a namespace that exists and is not being deleted. */
  private checkNamespaceOpen(def: ResourceDef, namespace: string | undefined): void {
    if (!def.namespaced) return;
    const ns = this.store.get(NAMESPACES, undefined, namespace!);
    if (!ns) throw notFound(NAMESPACES, namespace!);
    if (ns.metadata.deletionTimestamp) throw forbidden(def, undefined, `unable to create new content in namespace ${namespace} because it is being terminated`);
  }

  /** Validation and allocation of an object about to be written. */
  private admit(def: ResourceDef, obj: Obj, old: Obj | undefined): void {
    applyDefaults(def, obj);
    if (def.name === 'services') keepAllocated(obj, old);
    const errors = validateObject(def.name, obj, old);
    if (errors.length) throw invalid(def, obj.metadata.name, errors);
    if (def.name === 'services') {
      const others = this.store.list(def).filter((s) => !(s.metadata.namespace === obj.metadata.namespace && s.metadata.name === obj.metadata.name));
      const allocation = allocateService(obj, others, this.ranges);
      if (allocation.length) throw invalid(def, obj.metadata.name, allocation);
    }
  }

  create(def: ResourceDef, namespace: string | undefined, body: unknown, o: WriteOptions = {}): Promise<WriteResult> {
    const warnings: string[] = [];
    const obj = this.decode(def, body, o.fieldValidation ?? 'Warn', warnings);
    return this.serialize(async () => {
      this.checkNamespace(def, namespace, obj);
      if (!obj.metadata.name && obj.metadata.generateName) obj.metadata.name = generateName(obj.metadata.generateName);
      this.checkNamespaceOpen(def, namespace);
      prepareForCreate(def, obj);
      this.admit(def, obj, undefined);
      if (o.dryRun) return { object: obj, warnings, created: true };
      return { object: await this.store.create(def, obj), warnings, created: true };
    });
  }

  /** PUT: replaces the object (or its status); creates it where kube-apiserver allows that. */
  update(def: ResourceDef, namespace: string | undefined, name: string, body: unknown, subresource: 'status' | undefined, o: WriteOptions = {}): Promise<WriteResult> {
    const warnings: string[] = [];
    const obj = this.decode(def, body, o.fieldValidation ?? 'Warn', warnings);
    if (obj.metadata.name !== undefined && obj.metadata.name !== name) throw badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    obj.metadata.name = name;
    return this.serialize(async () => {
      this.checkNamespace(def, namespace, obj);
      const old = this.store.get(def, namespace, name);
      if (!old) {
        if (!def.createOnUpdate || subresource) throw notFound(def, name);
        this.checkNamespaceOpen(def, namespace);
        prepareForCreate(def, obj);
        this.admit(def, obj, undefined);
        return { object: o.dryRun ? obj : await this.store.create(def, obj), warnings, created: true };
      }
      return { object: await this.replace(def, obj, old, subresource, o), warnings };
    });
  }

  /** Writes `obj` over `old`; a resourceVersion in `obj` must be the stored one (else 409). */
  private async replace(def: ResourceDef, obj: Obj, old: Obj, subresource: 'status' | undefined, o: WriteOptions): Promise<Obj> {
    const rv = obj.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== old.metadata.resourceVersion) throw conflict(def, obj.metadata.name);
    prepareForUpdate(def, obj, old, subresource);
    this.admit(def, obj, old);
    if (o.dryRun) return obj;
    const stored = await this.store.update(def, obj, Number(old.metadata.resourceVersion));
    return this.finishDeletion(def, stored);
  }

  patch(def: ResourceDef, namespace: string | undefined, name: string, type: PatchType, patch: unknown, subresource: 'status' | undefined, o: WriteOptions = {}): Promise<WriteResult> {
    return this.serialize(async () => {
      const old = this.get(def, namespace, name);
      const current = clone(old);
      let patched: unknown;
      if (type === 'json') patched = jsonPatch(current, patch);
      else if (type === 'merge') patched = mergePatch(current, patch);
      else patched = strategicMergePatch(current, patch, def.model);
      const warnings: string[] = [];
      const obj = this.decode(def, patched, o.fieldValidation ?? 'Warn', warnings);
      if (obj.metadata.name !== name) throw badRequest(`a patch may not change the name (${name})`);
      this.checkNamespace(def, namespace, obj);
      return { object: await this.replace(def, obj, old, subresource, o), warnings };
    });
  }

  /** An object marked for deletion goes once its last finalizer is removed. */
  private async finishDeletion(def: ResourceDef, obj: Obj): Promise<Obj> {
    if (!obj.metadata.deletionTimestamp || (obj.metadata.finalizers?.length ?? 0) > 0 || def.name === 'namespaces') return obj;
    return this.store.remove(def, obj);
  }

  delete(def: ResourceDef, namespace: string | undefined, name: string, preconditions: { uid?: string; resourceVersion?: string } = {}, o: WriteOptions = {}): Promise<Obj> {
    return this.serialize(() => this.deleteNow(def, namespace, name, preconditions, o));
  }

  private async deleteNow(def: ResourceDef, namespace: string | undefined, name: string, preconditions: { uid?: string; resourceVersion?: string }, o: WriteOptions): Promise<Obj> {
    const current = this.get(def, namespace, name);
    if (preconditions.uid && preconditions.uid !== current.metadata.uid) {
      throw conflict(def, name, `Precondition failed: UID in precondition: ${preconditions.uid}, UID in object meta: ${current.metadata.uid}`);
    }
    if (preconditions.resourceVersion && preconditions.resourceVersion !== current.metadata.resourceVersion) {
      throw conflict(def, name, `Precondition failed: ResourceVersion in precondition: ${preconditions.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`);
    }
    if (def.name === 'namespaces' && PROTECTED_NAMESPACES.includes(name)) throw forbidden(def, name, 'this namespace may not be deleted');
    const graceful = def.name === 'namespaces' || (current.metadata.finalizers?.length ?? 0) > 0;
    if (!graceful) return o.dryRun ? current : this.store.remove(def, current);
    if (current.metadata.deletionTimestamp) return current;
    // Namespaces and objects with finalizers are marked; their controllers finish the deletion.
    const marked = clone(current);
    marked.metadata.deletionTimestamp = now();
    if (def.name === 'namespaces') marked.status = { ...(marked.status ?? {}), phase: 'Terminating' };
    return o.dryRun ? marked : this.store.update(def, marked, Number(current.metadata.resourceVersion));
  }

  deleteCollection(def: ResourceDef, namespace: string | undefined, labels: LabelRequirement[], fields: FieldRequirement[], o: WriteOptions = {}): Promise<Obj[]> {
    return this.serialize(async () => {
      const out: Obj[] = [];
      for (const obj of this.list(def, namespace, labels, fields)) {
        try {
          out.push(await this.deleteNow(def, obj.metadata.namespace, obj.metadata.name, {}, o));
        } catch (err) {
          if (!(err instanceof ApiError && err.code === 404)) throw err;
        }
      }
      return out;
    });
  }

  /** Removes a namespace whose content is gone (the namespace controller's last step). */
  finalizeNamespace(name: string): Promise<void> {
    return this.serialize(async () => {
      const ns = this.store.get(NAMESPACES, undefined, name);
      if (!ns?.metadata.deletionTimestamp) return;
      await this.store.remove(NAMESPACES, ns);
      this.log.info({ namespace: name }, 'namespace deleted');
    });
  }
}
