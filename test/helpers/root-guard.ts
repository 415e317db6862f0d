// Loaded into every ava worker before any test (package.json "ava.require"): a kernel-writing
// program started from a test or from the code under test must run inside a network namespace
// (`ip netns exec NAME ...`, `ip -n NAME ...`). Started in the machine's own namespace it is
// refused with an error naming the command, so a forgotten netns fails its test instead of
// programming this machine (an applier given a target without netns and no fake once filled
// the root namespace with KUBE-* chains). Reading (iptables-save, nft list, ip show) is allowed.
import childProcess from 'node:child_process';
import { basename } from 'node:path';
import { syncBuiltinESMExports } from 'node:module';

const IP_WRITES = new Set(['add', 'del', 'delete', 'set', 'change', 'replace', 'flush', 'append', 'prepend', 'attach', '-batch', '-b']);
const IPTABLES_WRITES = /^-(?:[AIDRNXFPEZ]|-(?:append|insert|delete|replace|new-chain|delete-chain|flush|policy|rename-chain|zero))$/;
const NFT_WRITES = new Set(['-f', '--file', 'add', 'create', 'insert', 'replace', 'delete', 'destroy', 'flush', 'reset', 'rename']);

/** Why running `file args` here would change the machine's own network, or null. */
export function rootWrite(file: string, args: readonly string[]): string | null {
  const name = basename(file);
  const inNetns = args.includes('-n') || args.includes('-netns');
  if (name === 'ip') {
    if (inNetns) return null;
    if (args[0] === 'netns') return args[1] === 'attach' || args[1] === 'set' ? 'ip netns attach/set' : null;
    // A link made straight in a namespace (a veth's peer too) never exists here.
    if (args[0] === 'link' && args[1] === 'add' && args.filter((a) => a === 'netns').length === (args.includes('peer') ? 2 : 1)) return null;
    return args.some((a) => IP_WRITES.has(a)) ? 'ip changes the machine\'s own links, addresses or routes' : null;
  }
  if (name === 'bridge' || name === 'tc') return inNetns || args.includes('show') || args.includes('list') ? null : `${name} in the machine's own namespace`;
  if (/^ip6?tables(-nft|-legacy)?-restore$/.test(name)) return 'iptables-restore in the machine\'s own namespace';
  if (/^ip6?tables(-nft|-legacy)?$/.test(name)) return args.some((a) => IPTABLES_WRITES.test(a)) ? 'iptables changes the machine\'s own rules' : null;
  // -c checks a ruleset without committing it.
  if (name === 'nft') return args.some((a) => NFT_WRITES.has(a)) && !args.includes('-c') && !args.includes('--check') ? 'nft changes the machine\'s own ruleset' : null;
  if (name === 'conntrack') return args.some((a) => /^-(?:[DFIU]|-delete|-flush|-create|-update)$/.test(a)) ? 'conntrack changes the machine\'s own table' : null;
  if (name === 'sysctl') return args.some((a) => a === '-w' || a.includes('=')) ? 'sysctl writes the machine\'s own settings' : null;
  if (name === 'ethtool') return args.some((a) => /^-[A-Z]$|^--(?:change|set-|offload|features)/.test(a)) ? 'ethtool changes the machine\'s own devices' : null;
  return null;
}

function check(file: unknown, args: unknown): void {
  if (typeof file !== 'string') return;
  const list = Array.isArray(args) ? args.map(String) : [];
  const why = rootWrite(file, list);
  if (why) throw new Error(`root-guard: refused ${[file, ...list].join(' ').slice(0, 300)}: ${why}; run it inside a test namespace`);
}

type Fn = (...a: unknown[]) => unknown;
const cp = childProcess as unknown as Record<string, Fn>;
for (const fn of ['execFile', 'execFileSync', 'spawn', 'spawnSync']) {
  const original = cp[fn]!;
  cp[fn] = function guarded(this: unknown, file: unknown, args?: unknown, ...rest: unknown[]) {
    check(file, args);
    return original.call(this, file, args, ...rest);
  };
  // promisify(execFile) uses this symbol's function, which calls the original directly: guard it too.
  const symbol = Symbol.for('nodejs.util.promisify.custom');
  const custom = (original as unknown as Record<symbol, Fn | undefined>)[symbol];
  if (custom) {
    (cp[fn] as unknown as Record<symbol, Fn>)[symbol] = function guardedPromise(this: unknown, file: unknown, args?: unknown, ...rest: unknown[]) {
      try {
        check(file, args);
      } catch (err) {
        return Promise.reject(err);
      }
      return custom.call(this, file, args, ...rest);
    };
  }
}
syncBuiltinESMExports();
