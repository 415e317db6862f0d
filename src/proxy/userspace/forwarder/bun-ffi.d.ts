// The part of Bun's `bun:ffi` module the forwarder uses (the forwarder runs only under Bun; the
// Node type-check needs these declarations instead of Bun's whole type package).
declare module 'bun:ffi' {
  export type Pointer = number;
  export const FFIType: { readonly i32: number; readonly u32: number; readonly i64_fast: number; readonly ptr: number; readonly u64: number };
  export interface Library<F> { symbols: F; close(): void }
  export function dlopen<F>(path: string, symbols: Record<keyof F, { args: readonly number[]; returns: number }>): Library<F>;
  export function ptr(view: ArrayBufferView, byteOffset?: number): Pointer;
  export const read: { i32(p: Pointer, byteOffset?: number): number };
}
