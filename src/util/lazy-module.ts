// Modules that only rare paths need, loaded on first use. Every `knet` command pays for each
// module imported at start-up: js-yaml took ~20 ms of a `knet rules` start and node:crypto ~7 ms,
// for YAML the block reader declines and for chain names that are not short ASCII.
import { createRequire } from 'node:module';

const requireHere = createRequire(import.meta.url);

/** A function that returns the module `id`, required the first time it is called. */
export function lazyModule<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= requireHere(id) as T);
}
