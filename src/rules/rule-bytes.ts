// Rule lines kept as UTF-8 bytes outside the JS heap, for a render that is used once (`knet
// rules`). A renderer that lives between syncs keeps strings it can compare and reuse; a one-shot
// render only writes its service chains' rules out at the end, after every declaration. Kept as
// strings, a 10k-service render's ~100k rules were promoted by the young-generation GCs that ran
// while they were made: as bytes, `knet rules` on a 10k-service dump promotes 34 MB instead of
// 47 and pauses for GC ~300 ms instead of ~370 (--trace-gc-nvp).
import { Buffer } from 'node:buffer';

/** Room for most renders of a few thousand services; a port that needs more gets a block of its own. */
const BLOCK_BYTES = 1 << 20;

/** Append-only blocks of rule lines; a view handed out stays valid for the arena's life (it never frees). */
export class RuleArena {
  private block = Buffer.allocUnsafe(0);
  private used = 0;

  /** The lines, in order and each ended by "\n", as one view into the arena. */
  append(groups: readonly (readonly string[])[]): Uint8Array {
    // One string per call, written at once: a write per line cost more than the GC it saves.
    const lines: string[] = [];
    for (const group of groups) for (const line of group) lines.push(line);
    if (lines.length === 0) return this.block.subarray(0, 0);
    lines.push('');
    const text = lines.join('\n');
    // UTF-8 takes at most 3 bytes per UTF-16 unit, so this many bytes always fit.
    const worst = text.length * 3;
    if (this.used + worst > this.block.length) {
      this.block = Buffer.allocUnsafe(Math.max(BLOCK_BYTES, worst));
      this.used = 0;
    }
    const start = this.used;
    this.used += this.block.write(text, start, 'utf8');
    return this.block.subarray(start, this.used);
  }
}

/** The text of a view that `append` returned, without its last "\n". */
export function textOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8', 0, Math.max(0, bytes.byteLength - 1));
}

/** The lines of a view that `append` returned. */
export function linesOf(bytes: Uint8Array): string[] {
  return bytes.length === 0 ? [] : textOf(bytes).split('\n');
}
