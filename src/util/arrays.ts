// Small array and string helpers shared by the renderers and the restore planner.

/**
 * The string as one flat piece. A template literal builds a rope (a tree of its pieces) that V8
 * flattens only when something reads it; reading one character flattens it, and the GC then
 * drops the rope's nodes. The renderers keep every rule text between syncs: flat, they take
 * about half the memory, and later joins and compares need no flattening.
 */
export function flat(s: string): string {
  s.charCodeAt(0);
  return s;
}

/** Frozen, so a caller that tried to append to a shared empty list would fail loudly. */
const NO_STRINGS: readonly string[] = Object.freeze([]);

/**
 * An exact-size copy of a list of strings that is kept between renders: a pushed-to array keeps
 * spare capacity (17 slots for one rule).
 */
export const exactStrings = (list: readonly string[]): readonly string[] => (list.length === 0 ? NO_STRINGS : list.slice());

/** Same strings in the same order (null/undefined: unknown, never equal). Same array: one check. */
export function sameStrings(a: readonly string[] | null | undefined, b: readonly string[]): boolean {
  if (a === b) return true;
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
