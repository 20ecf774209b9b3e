/** Per-conversation ordering without I/O: deliver each seq once, in order, hold what comes early. */

import type { Msg } from "./events.js";

/** A conversation whose next seq is missing while later ones wait. */
export interface Gap {
  conv: string;
  /** The last seq delivered: read history after it. */
  afterSeq: number;
  /** The first seq held. */
  firstHeld: number;
}

export class Streams {
  private readonly seenBy = new Map<string, number>();
  private readonly heldBy = new Map<string, Map<number, Msg>>();

  constructor(seen?: Record<string, number> | Map<string, number>) {
    if (seen) for (const [conv, seq] of seen instanceof Map ? seen : Object.entries(seen)) this.setSeen(conv, seq);
  }

  /** The last seq delivered in `conv` (0 when none). */
  seen(conv: string): number {
    return this.seenBy.get(conv) ?? 0;
  }

  /** Whether `conv` has a seen value (from the baseline, the app, or a delivery). */
  knows(conv: string): boolean {
    return this.seenBy.has(conv);
  }

  /** A copy of every conversation's seen. */
  snapshot(): Map<string, number> {
    return new Map(this.seenBy);
  }

  /** Counts `seq` as seen (the baseline or the app's storage) unless more is already; drops held frames up to it. */
  setSeen(conv: string, seq: number): void {
    if (seq > this.seen(conv) || !this.knows(conv)) this.seenBy.set(conv, Math.max(seq, this.seen(conv)));
    const held = this.heldBy.get(conv);
    if (held) for (const s of [...held.keys()]) if (s <= seq) held.delete(s);
  }

  /** Takes one message (live, history or own) and returns those now deliverable, in order:
   * none for a duplicate or an early one (held), several when it closes a gap. */
  offer(msg: Msg): Msg[] {
    const conv = msg.conv;
    const seen = this.seen(conv);
    if (msg.seq <= seen) return [];
    if (msg.seq > seen + 1) {
      let held = this.heldBy.get(conv);
      if (!held) this.heldBy.set(conv, (held = new Map()));
      if (!held.has(msg.seq)) held.set(msg.seq, msg);
      return [];
    }
    const out = [msg];
    let next = msg.seq + 1;
    const held = this.heldBy.get(conv);
    while (held?.has(next)) {
      out.push(held.get(next)!);
      held.delete(next);
      next += 1;
    }
    if (held && held.size === 0) this.heldBy.delete(conv);
    this.seenBy.set(conv, next - 1);
    return out;
  }

  /** Gives up on `conv`'s gap (history cannot fill it: the conversation was left): returns the held
   * frames in seq order and counts them as seen. */
  release(conv: string): Msg[] {
    const held = this.heldBy.get(conv);
    if (!held) return [];
    this.heldBy.delete(conv);
    const out = [...held.values()].sort((a, b) => a.seq - b.seq);
    if (out.length) this.seenBy.set(conv, out[out.length - 1]!.seq);
    return out;
  }

  /** The gap of `conv`, if frames are held there. */
  gap(conv: string): Gap | undefined {
    const held = this.heldBy.get(conv);
    if (!held || held.size === 0) return undefined;
    return { conv, afterSeq: this.seen(conv), firstHeld: Math.min(...held.keys()) };
  }

  /** Every conversation with frames held behind a gap. */
  gaps(): Gap[] {
    return [...this.heldBy.keys()].map((conv) => this.gap(conv)).filter((g): g is Gap => g !== undefined);
  }
}
