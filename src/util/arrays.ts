// Small array helpers shared by the renderer and the restore planner.

/** Same strings in the same order (null/undefined: unknown, never equal). Same array: one check. */
export function sameStrings(a: readonly string[] | null | undefined, b: readonly string[]): boolean {
  if (a === b) return true;
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
