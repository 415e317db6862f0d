// The fast block-YAML reader must give exactly what js-yaml's core schema gives, or decline
// (null) so that js-yaml reads the text: generated documents, kubectl-style dumps and mutated
// text all check that; kubectl's own shape must not be declined.
import test from 'ava';
import fc from 'fast-check';
import jsyaml from 'js-yaml';
import { stringify } from 'yaml';
import { readBlockYaml } from '../../src/k8s/block-yaml.ts';
import { parseManifestText } from '../../src/k8s/manifests.ts';
import { syntheticCluster } from '../../scripts/bench/synthetic-cluster.ts';

const jsYaml = (text: string): unknown[] | Error => {
  try { return jsyaml.loadAll(text, undefined, { schema: jsyaml.CORE_SCHEMA }); } catch (e) { return e as Error; }
};

/** The reader either declines or agrees with js-yaml (which then must not have failed). */
function agrees(text: string): boolean {
  const fast = readBlockYaml(text);
  if (fast === null) return true;
  const slow = jsYaml(text);
  if (slow instanceof Error) throw new Error(`js-yaml refuses what the fast reader read: ${JSON.stringify(text)}: ${slow.message}`);
  // Objects, numbers (-0, NaN, Infinity included) and key order compared through a lossless text.
  const show = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x)) || Object.is(x, -0) ? `#${String(x)}${Object.is(x, -0) ? '-0' : ''}` : x);
  if (show(fast) !== show(slow)) throw new Error(`differs on ${JSON.stringify(text)}:\n fast ${show(fast)}\n js-yaml ${show(slow)}`);
  return true;
}

const kubectlStyle = `apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    annotations: {}
    labels:
      app.kubernetes.io/name: web
    name: web
    namespace: default
  spec:
    clusterIP: 10.96.0.10
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    selector:
      app: web
    sessionAffinity: None
  status:
    loadBalancer: {}
- addressType: IPv4
  apiVersion: discovery.k8s.io/v1
  endpoints:
  - addresses:
    - 10.244.1.5
    conditions:
      ready: true
      terminating: false
    nodeName: "node-1"
    targetRef: null
  kind: EndpointSlice
  metadata:
    name: 'web-abc'
    namespace: default
  ports: []
kind: List
metadata:
  resourceVersion: ""
`;

test('kubectl -o yaml is read by the fast reader, exactly as js-yaml reads it', (t) => {
  const fast = readBlockYaml(kubectlStyle);
  t.not(fast, null);
  t.deepEqual(fast, jsYaml(kubectlStyle) as unknown[]);
  const big = stringify({ apiVersion: 'v1', items: [...syntheticCluster(50).services, ...syntheticCluster(50).endpointSlices], kind: 'List' });
  t.not(readBlockYaml(big), null);
  t.true(agrees(big));
  // Several documents, comment lines, a leading separator.
  const multi = '# services\n---\napiVersion: v1\nkind: Service\n---\n# next\napiVersion: v1\nkind: Node\n';
  t.deepEqual(readBlockYaml(multi), [{ apiVersion: 'v1', kind: 'Service' }, { apiVersion: 'v1', kind: 'Node' }]);
});

test('typed plain scalars come out as the core schema types them, keys as js-yaml strings them', (t) => {
  t.deepEqual(readBlockYaml('- - 1\n  - - x: 2\n      y: 3\n- 4\n'), [[[1, [{ x: 2, y: 3 }]], 4]]);
  const text = 'a: 0x10\nb: 1e3\nc: .inf\nd: ~\ne: TRUE\nf: "80"\ng: 10.0.0.1\nh: -1\n0o7: x\nnull: y\ni: 1_000\nj: .5\n';
  t.not(readBlockYaml(text), null);
  t.true(agrees(text));
});

test('plain scalars around the fast paths (words, digits, dotted digits) resolve as js-yaml resolves them', (t) => {
  const scalars = ['0', '00', '0123', '7', '80', '123456789012345', '1234567890123456', '12345678901234567890', '1_000', '1.', '1.5',
    '1.5.', '10.0.0.1', '1..2', '1.2.3.4.5', '1e3', '1.2e3', '1-2', '1:30', '0x1F', '0o17', '0b11', '9a', '2026-11-02T10:00:00Z',
    'null', 'Null', 'NULL', 'nULL', 'nul', 'nulls', 'true', 'True', 'TRUE', 'tRUE', 'false', 'False', 'FALSE', 'fals', 'Nope',
    'TCP', 'node-0', 'n', 't', 'f', 'N', 'T', 'F', '~', '.inf', '-.Inf', '.NaN', '-1', '+1', '-0', '+0', '.5'];
  for (const v of scalars) {
    const text = `value: ${v}\nlist:\n- ${v}\n`;
    t.not(readBlockYaml(text), null, v);
    t.true(agrees(text), v);
    t.true(agrees(`${v}: key\n`), v);
  }
});

test('what is outside plain block YAML is declined, so js-yaml reads it (or reports its line)', (t) => {
  for (const text of [
    '', '# only a comment\n', 'a: 1\n---\n', 'a: 1\n---\n---\nb: 2\n', 'a: &x 1\nb: *x\n', 'a: !!str 1\n', 'a: |\n  text\n',
    'a: {b: 1}\n', 'a: [1, 2]\n', 'a: "x\\ny"\n', 'a: b\n  c\n', 'a: 1\na: 2\n', 'key: - a\n', 'a: b # comment\n',
    'a:\n\tb: 1\n', 'a: 1\r\nb: 2\r\n', '\uFEFFa: 1\n', '%YAML 1.2\n---\na: 1\n', 'a: 1\n...\n', '? a\n: b\n', '__proto__: 1\n',
    'a : 1\n', 'a: 1\n b: 2\n', 'a:\n  - 1\n  b: 2\n', 'just a scalar\n', 'a: "x" y\n', "a: 'x' y'\n",
  ]) {
    t.is(readBlockYaml(text), null, JSON.stringify(text));
    t.true(agrees(text));
  }
  // Through the manifest reader: a declined text keeps js-yaml's file:line:column errors.
  t.throws(() => parseManifestText('a: 1\na: 2\n', 'm.yaml'), { message: /m\.yaml:2:/ });
});

const scalar = fc.oneof(
  fc.constantFrom('', ' ', 'a: b', '#x', 'a #b', '- a', "it's", '"q"', '123', '0123', '1e3', '0o7', '0x1F', '.inf', '-.inf', '.nan', 'null', 'Null', '~',
    'yes', 'True', 'FALSE', 'a\\b', ':', '-', '---', '{}', '[]', 'x:y', 'http://a:80/', '10.0.0.1', '2001:db8::1', '-1', '+1', '1_0', '.5', '5.', 'a b  c', '*', '&a', '!t', '|', '>', '%', '@', '`'),
  fc.string({ maxLength: 8 }),
  fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
);
const key = fc.oneof(fc.constantFrom('name', 'true', 'null', '0x10', '1', 'a b', 'x:y', 'k-', '-k', 'a.b/c', 'ready', 'port'), fc.string({ minLength: 1, maxLength: 6 }));
const { value } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('list'), tie('map')),
  list: fc.array(tie('value'), { maxLength: 4 }),
  map: fc.dictionary(key, tie('value'), { maxKeys: 4 }),
}));

// Documents shaped like Kubernetes objects (a mapping at the top, plain keys), so most are read.
const plainScalar = fc.oneof(fc.constantFrom('web', 'default', '10.0.0.1', 'TCP', 'a b', 'x:y', '123', 'true', 'null', "it's", ''), fc.integer(), fc.boolean(), fc.constant(null));
const { object } = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, plainScalar, tie('array'), tie('object')),
  array: fc.array(tie('node'), { maxLength: 3 }),
  object: fc.dictionary(fc.constantFrom('name', 'namespace', 'ports', 'port', 'ready', 'spec', 'items', 'a.b/c', 'x y'), tie('node'), { minKeys: 1, maxKeys: 4 }),
}));

test('generated documents, dumped by js-yaml and by the yaml package: declined or read exactly as js-yaml reads them', (t) => {
  let read = 0;
  fc.assert(fc.property(fc.array(value, { minLength: 1, maxLength: 3 }), fc.boolean(), fc.boolean(), (docs, viaYamlPackage, compactSeq) => {
    const text = viaYamlPackage
      ? docs.map((d) => stringify(d, { indentSeq: compactSeq })).join('---\n')
      : docs.map((d) => jsyaml.dump(d, { schema: jsyaml.CORE_SCHEMA, noArrayIndent: compactSeq })).join('---\n');
    if (readBlockYaml(text) !== null) read++;
    return agrees(text);
  }), { numRuns: 3000 });
  t.log(`the fast reader read ${read} of 3000 arbitrary documents`);
  read = 0;
  fc.assert(fc.property(fc.array(object, { minLength: 1, maxLength: 3 }), fc.boolean(), (docs, compactSeq) => {
    const text = docs.map((d) => stringify(d, { indentSeq: compactSeq })).join('---\n');
    if (readBlockYaml(text) !== null) read++;
    return agrees(text);
  }), { numRuns: 2000 });
  t.log(`and ${read} of 2000 object-shaped ones`);
  t.true(read > 1800, `the fast reader read ${read} of 2000 object-shaped documents`);
});

test('mutated kubectl text: declined or read exactly as js-yaml reads it', (t) => {
  const pieces = [' ', '  ', '-', '- ', ':', ': ', '#', ' #', '\n', '"', "'", 'a', '&', '*', '|', '{', '}', '[', ']', '0', '---\n', '\t'];
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(kubectlStyle.length), fc.nat(3), fc.constantFrom(...pieces)), { minLength: 1, maxLength: 4 }), (edits) => {
    let text = kubectlStyle;
    for (const [at, cut, piece] of edits) { const i = Math.min(at, text.length); text = text.slice(0, i) + piece + text.slice(i + cut); }
    return agrees(text);
  }), { numRuns: 4000 });
  t.pass();
});

test('scalars that start with a digit (timestamps, CIDRs, versions, numbers) are typed as js-yaml types them', (t) => {
  // The reader calls a digit followed by a character no number holds a string without asking
  // js-yaml; these strings mix such characters with every character a number may hold.
  const digitLed = fc.tuple(fc.constantFrom(...'0123456789'), fc.array(fc.constantFrom(...'0123456789.:/-+_eExXoObTZafn ~é'), { maxLength: 12 }))
    .map(([first, rest]) => (first + rest.join('')).trimEnd());
  fc.assert(fc.property(digitLed, (v) => agrees(`value: ${v}\nlist:\n- ${v}\n${v}: key\n`)), { numRuns: 3000 });
  for (const v of ['10.0.0.0/16', '2026-11-02T10:00:00Z', '1:30', '2001:db8::1', '1.2.3-rc1', '0x1F', '1e3', '1_000', '9é']) {
    t.true(agrees(`value: ${v}\n`), v);
  }
});

test('documents with nested sequences of every length come out whole (the reader builds sequences on one stack)', (t) => {
  const text = 'a:\n- - 1\n  - 2\n  - - 3\n    - []\n- []\n- x: [ ]\n- y:\n  - 4\n  - - 5\n    - 6\n  z: 7\nb:\n- 8\n';
  t.true(agrees(text.replace('[ ]', '[]')));
  t.deepEqual(readBlockYaml('a:\n- - 1\n  - 2\n  - - 3\n- y:\n  - 4\n  - - 5\n    - 6\n  z: 7\nb:\n- 8\n'), [{ a: [[1, 2, [3]], { y: [4, [5, 6]], z: 7 }], b: [8] }]);
});

test('keys guessed from the objects before them are checked against the text: prefixes, colons, typed and repeated keys', (t) => {
  const texts = [
    '- a: 1\n  ab: 2\n- a: 3\n  abc: 4\n- a: 5\n  ab:c: 6\n- a: 7\n  ab: 8\n',
    '- name: x\n  port: 1\n- name: y\n  portx: 2\n- port: 3\n  name: z\n',
    '- a: 1\n  b: 2\n- a: 1\n  a: 2\n',
    '- 0x10: a\n  1: b\n- 0x10: c\n  1: d\n- 16: e\n',
    '- a:\n    b: 1\n- a: 2\n- a:\n  - 3\n',
    'items:\n- kind: Service\n  metadata:\n    name: a\n- kind: Service\n  metadata:\n    namespace: b\n    name: c\n',
  ];
  for (const text of texts) {
    t.true(agrees(text), text);
  }
  t.deepEqual(readBlockYaml(texts[0]!), [[{ a: 1, ab: 2 }, { a: 3, abc: 4 }, { a: 5, 'ab:c': 6 }, { a: 7, ab: 8 }]]);
  t.is(readBlockYaml(texts[2]!), null, 'a repeated key is declined, guessed or not');
});
