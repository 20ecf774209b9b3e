/** The app's model: each conversation's messages by seq (so nothing shows twice), its place in the list,
 * unread count, receipts and typing users. No DOM here. */

import type { ConversationItem, Msg } from "./wire.js";

export class Conversation {
  readonly messages = new Map<number, Msg>();
  /** Each other member's read position (the largest receipt seen). */
  readonly receipts = new Map<number, number>();
  /** Users typing now, with when their indicator expires (ms since the epoch). */
  readonly typing = new Map<number, number>();
  /** Event seqs already reflected in the messages they change (from a history page or applied live). */
  private readonly applied = new Set<number>();
  /** My own reactions: "seq emoji" → the newest react/unreact event of mine for it (history pages
   * may arrive in any order, so the newest seq wins). */
  private readonly mine = new Map<string, { at: number; on: boolean }>();
  lastSeq = 0;
  unread = 0;
  /** An unread message names me in its mentions (the list's "@" badge); cleared when read. */
  mentioned = false;
  last: Msg | null = null;
  updatedAt = 0;
  /** History was read down to seq 1: nothing older to load. */
  reachedStart = false;
  /** The newest page of history has been read (done once, when the conversation is first opened). */
  loaded = false;
  readSent = 0;

  constructor(readonly conv: string, readonly me = 0) {}

  get isGroup(): boolean {
    return this.conv.startsWith("g:");
  }

  /** Messages in seq order. */
  ordered(): Msg[] {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  oldestSeq(): number {
    let oldest = Infinity;
    for (const seq of this.messages.keys()) oldest = Math.min(oldest, seq);
    return oldest;
  }

  /** Take in a message; `live` ones (from the SDK's stream) apply their change events to their target.
   * Returns whether the seq was new here. */
  add(msg: Msg, live: boolean): boolean {
    const fresh = !this.messages.has(msg.seq);
    this.messages.set(msg.seq, msg);
    this.lastSeq = Math.max(this.lastSeq, msg.seq);
    if (msg.kind === "event" && msg.event !== undefined) {
      this.noteMyReaction(msg);
      if (live && !this.applied.has(msg.seq)) this.applyChange(msg);
      this.applied.add(msg.seq);
    } else if (!msg.deleted && msg.seq >= (this.last?.seq ?? 0)) {
      this.last = msg;
    }
    this.updatedAt = Math.max(this.updatedAt, msg.ts);
    return fresh;
  }

  /** A recall, edit or reaction arriving live changes the message it names, if that one is loaded. */
  private applyChange(event: Msg): void {
    const change = event.event!;
    const target = typeof change.seq === "number" ? this.messages.get(change.seq) : undefined;
    if (target === undefined) return;
    if (change.type === "recall") {
      target.recalled = true;
      target.body = "";
      delete target.file_id;
      delete target.mentions;
    } else if (change.type === "edit" && typeof change.body === "string") {
      target.body = change.body;
      target.edited = event.ts;
    } else if ((change.type === "react" || change.type === "unreact") && typeof change.emoji === "string") {
      const reactions = { ...(target.reactions ?? {}) };
      reactions[change.emoji] = (reactions[change.emoji] ?? 0) + (change.type === "react" ? 1 : -1);
      if (reactions[change.emoji] <= 0) delete reactions[change.emoji];
      target.reactions = reactions;
    }
  }

  private noteMyReaction(event: Msg): void {
    const change = event.event!;
    if (event.from !== this.me || (change.type !== "react" && change.type !== "unreact")) return;
    const key = `${String(change.seq)} ${String(change.emoji)}`;
    if ((this.mine.get(key)?.at ?? 0) < event.seq) this.mine.set(key, { at: event.seq, on: change.type === "react" });
  }

  /** Whether I gave this reaction to message `seq` (as far as the loaded events tell). */
  reacted(seq: number, emoji: string): boolean {
    return this.mine.get(`${seq} ${emoji}`)?.on ?? false;
  }

  /** The newest own message others have read, and how many of them did. */
  seenMark(me: number): { seq: number; by: number } | null {
    let best: { seq: number; by: number } | null = null;
    for (const msg of this.ordered()) {
      if (msg.from !== me || msg.kind === "event") continue;
      const by = [...this.receipts.entries()].filter(([user, seq]) => user !== me && seq >= msg.seq).length;
      if (by > 0) best = { seq: msg.seq, by };
    }
    return best;
  }

  typingNow(now: number): number[] {
    return [...this.typing.entries()].filter(([, until]) => until > now).map(([user]) => user);
  }
}

export class Store {
  readonly conversations = new Map<string, Conversation>();

  constructor(readonly me: number) {}

  get(conv: string): Conversation {
    let found = this.conversations.get(conv);
    if (found === undefined) {
      found = new Conversation(conv, this.me);
      this.conversations.set(conv, found);
    }
    return found;
  }

  /** The server's conversation list (unread counts, last messages). */
  takeList(items: ConversationItem[]): void {
    for (const item of items) {
      const c = this.get(item.conv);
      c.lastSeq = Math.max(c.lastSeq, item.last_seq);
      c.unread = item.unread;
      c.mentioned = item.mentioned === true;
      c.readSent = Math.max(c.readSent, item.read_seq);
      if (item.last_message !== null && item.last_message.seq >= (c.last?.seq ?? 0)) {
        c.last = item.last_message;
        c.updatedAt = Math.max(c.updatedAt, item.last_message.ts);
      }
    }
  }

  /** Newest activity first; conversations without messages last. */
  ordered(): Conversation[] {
    return [...this.conversations.values()].sort((a, b) => b.updatedAt - a.updatedAt || a.conv.localeCompare(b.conv));
  }
}
