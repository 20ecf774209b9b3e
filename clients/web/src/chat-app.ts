/** The signed-in app: conversation list, the open chat, new direct and group chats, and the
 * connection banner. Messages come only from the SDK's ordered stream and history pages, kept by seq. */

import { Api, reasonOf } from "./api.js";
import { byId, clear, h } from "./dom.js";
import { Media } from "./media.js";
import { Names } from "./names.js";
import { messageItem, type RenderContext } from "./render.js";
import type { ImrayClient } from "./sdk/index.js";
import { saveClient } from "./session.js";
import { Conversation, Store } from "./store.js";
import { directConv, peerOf, type Msg } from "./wire.js";

const TYPING_SHOWN_MS = 5000;
const TYPING_SENT_EVERY_MS = 3000;
const PAGE = 50;
const STATE_TEXT: Record<string, string> = {
  connecting: "Connecting…",
  connected: "Online",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

interface Pending {
  key: number;
  conv: string;
  text: string;
  failed?: string;
}

export class ChatApp {
  private readonly store: Store;
  private readonly rest: Api;
  private readonly names: Names;
  private readonly media: Media;
  private open: Conversation | null = null;
  private pending: Pending[] = [];
  private pendingKey = 0;
  private typingSentAt = 0;
  private renderQueued = false;
  private saver: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly chat: ImrayClient, private readonly username: string, private readonly onLogout: () => void) {
    this.store = new Store(chat.userId);
    this.rest = new Api(chat);
    this.names = new Names(this.rest, () => this.render());
    this.media = new Media(this.rest);
  }

  private get me(): number {
    return this.store.me;
  }

  /** Draw the page, read the list, then open the socket (the SDK catches up from there). */
  async start(): Promise<void> {
    this.layout();
    const chat = this.chat;
    let closedBecause: string | undefined;
    chat.on("error", (e) => (closedBecause = e.message));
    chat.on("state", (e) => {
      this.showState(e.state, e.state === "closed" ? closedBecause : undefined);
      saveClient(chat, this.username);
    });
    chat.on("frame", () => saveClient(chat, this.username));  // refresh_ok: the tokens rotated
    chat.on("message", (e) => this.take(e.message as Msg));
    chat.on("receipt", (e) => {
      const c = this.store.get(e.conv);
      c.receipts.set(e.user_id, Math.max(c.receipts.get(e.user_id) ?? 0, e.seq));
      if (e.user_id === this.me) c.unread = 0;  // read in another of my sessions
      this.render();
    });
    chat.on("typing", (e) => {
      this.store.get(e.conv).typing.set(e.user_id, Date.now() + TYPING_SHOWN_MS);
      this.render();
      setTimeout(() => this.render(), TYPING_SHOWN_MS + 50);
    });
    chat.on("deleted", (e) => {
      const msg = this.store.get(e.conv).messages.get(e.seq);
      if (msg !== undefined) msg.deleted = true;
      this.render();
    });
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("pagehide", () => saveClient(chat, this.username));
    const list = await this.rest.conversations();
    this.store.takeList(list);
    this.render();
    // The list just read is the baseline: the stream brings exactly what comes after it.
    await chat.connect({ seen: Object.fromEntries(list.map((item) => [item.conv, item.last_seq])) });
    this.saver = setInterval(() => saveClient(chat, this.username), 5000);
  }

  // -- the stream ---------------------------------------------------------------------------

  private take(msg: Msg): void {
    const c = this.store.get(msg.conv);
    const fresh = c.add(msg, true);
    c.typing.delete(msg.from);
    const counts = msg.kind !== "event" && msg.from !== this.me && !msg.recalled;
    if (fresh && counts && !this.onScreen(c)) c.unread += 1;
    if (msg.event?.type === "updated" && typeof msg.event.name === "string") {
      this.names.setGroup(Number(msg.conv.slice(2)), msg.event.name);
    }
    this.render();
    this.markRead();
  }

  private onScreen(c: Conversation): boolean {
    return this.open === c && document.visibilityState !== "hidden";
  }

  /** Tell the server how far the open conversation is read (receipts to the others). */
  private markRead(): void {
    const c = this.open;
    if (c === null || !this.onScreen(c)) return;
    c.unread = 0;
    // `read` is dropped while disconnected: send it once connected (showState calls this again).
    if (c.lastSeq > c.readSent && c.messages.has(c.lastSeq) && this.chat.state === "connected") {
      c.readSent = c.lastSeq;
      this.chat.read(c.conv, c.lastSeq);
    }
  }

  // -- layout and rendering -----------------------------------------------------------------

  private layout(): void {
    const root = byId("root");
    clear(root);
    root.append(
      h("header", { class: "topbar" },
        h("h1", {}, "imray"),
        h("span", { class: "whoami" }, `Signed in as ${this.username}`),
        h("span", { id: "conn", class: "conn", role: "status", "data-state": "connecting" }, STATE_TEXT.connecting),
        h("button", { type: "button", id: "logout" }, "Log out")),
      h("main", { id: "layout", class: "layout", "data-view": "list" },
        h("nav", { class: "sidebar", "aria-label": "Conversations" },
          h("form", { id: "new-direct", class: "side-form" },
            h("label", { for: "direct-name" }, "Chat with (username)"),
            h("div", { class: "row" },
              h("input", { id: "direct-name", name: "username", autocomplete: "off", required: true }),
              h("button", { type: "submit" }, "Start"))),
          h("details", { class: "side-form" },
            h("summary", {}, "New group"),
            h("form", { id: "new-group" },
              h("label", { for: "group-name" }, "Group name"),
              h("input", { id: "group-name", name: "name", required: true, maxlength: 64 }),
              h("label", { for: "group-members" }, "Members (usernames, comma separated)"),
              h("input", { id: "group-members", name: "members", autocomplete: "off" }),
              h("button", { type: "submit" }, "Create group"))),
          h("p", { id: "side-error", class: "error", role: "alert" }),
          h("ul", { id: "conv-list", class: "conv-list" })),
        h("section", { id: "chat", class: "chat", "aria-label": "Chat" },
          h("header", { class: "chat-head" },
            h("button", { type: "button", id: "back", class: "back" }, "‹ Back"),
            h("h2", { id: "chat-title", tabindex: -1 }, "No conversation open"),
            h("span", { id: "typing", class: "typing", "aria-live": "polite" })),
          h("div", { id: "scroller", class: "scroller" },
            h("button", { type: "button", id: "older", class: "older", hidden: true }, "Load older messages"),
            h("ol", { id: "messages", class: "messages", "aria-label": "Messages" })),
          h("form", { id: "composer", class: "composer", hidden: true },
            h("input", { type: "file", id: "attach", class: "visually-hidden" }),
            h("label", { for: "attach", class: "attach" }, "Attach"),
            h("label", { for: "text", class: "visually-hidden" }, "Message"),
            h("textarea", { id: "text", rows: 1, placeholder: "Message", title: "Enter sends; Shift+Enter starts a new line", maxlength: 4000 }),
            h("button", { type: "submit", id: "send" }, "Send")))));
    byId("logout").addEventListener("click", () => void this.logout());
    byId("new-direct").addEventListener("submit", (e) => void this.startDirect(e));
    byId("new-group").addEventListener("submit", (e) => void this.createGroup(e));
    byId("back").addEventListener("click", () => this.closeChat());
    byId("older").addEventListener("click", () => void this.loadOlder());
    byId("scroller").addEventListener("scroll", () => {
      if (byId("scroller").scrollTop < 40 && !byId("older").hidden) void this.loadOlder();
    });
    const text = byId<HTMLTextAreaElement>("text");
    text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        byId<HTMLFormElement>("composer").requestSubmit();
      }
    });
    text.addEventListener("input", () => this.typed());
    byId("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      void this.sendText();
    });
    byId<HTMLInputElement>("attach").addEventListener("change", () => void this.sendFile());
  }

  private showState(state: string, reason?: string): void {
    const conn = byId("conn");
    conn.dataset.state = state;
    conn.textContent = reason !== undefined && state === "closed" ? `Disconnected: ${reason}` : STATE_TEXT[state] ?? state;
    if (state === "connected") this.markRead();
  }

  /** Coalesce renders into one per frame. */
  private render(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.renderList();
      this.renderChat();
    });
  }

  private title(c: Conversation): string {
    return c.isGroup ? this.names.group(Number(c.conv.slice(2))) : this.names.user(peerOf(c.conv, this.me));
  }

  private renderList(): void {
    const list = byId("conv-list");
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.conv;
    clear(list);
    for (const c of this.store.ordered()) {
      const last = c.last;
      const preview = last === null ? (c.isGroup ? "No messages yet" : "") : previewOf(last, this.me);
      const button = h("button", { type: "button", class: "conv", "data-conv": c.conv, "aria-current": this.open === c ? "true" : undefined },
        h("span", { class: "conv-title" }, this.title(c)),
        c.unread > 0 ? h("span", { class: "unread", "aria-label": `${c.unread} unread` }, String(c.unread)) : null,
        h("span", { class: "conv-last" }, preview));
      button.addEventListener("click", () => void this.openChat(c.conv));
      list.append(h("li", {}, button));
      if (focused === c.conv) button.focus();
    }
  }

  private renderChat(): void {
    const c = this.open;
    if (c === null) return;
    byId("chat-title").textContent = this.title(c);
    const typing = c.typingNow(Date.now()).map((u) => this.names.user(u));
    byId("typing").textContent = typing.length === 0 ? "" : `${typing.join(", ")} ${typing.length === 1 ? "is" : "are"} typing…`;
    const scroller = byId("scroller");
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
    const list = byId("messages");
    const ctx: RenderContext = { me: this.me, names: this.names, media: this.media, isGroup: c.isGroup };
    const seen = c.seenMark(this.me);
    clear(list);
    for (const msg of c.ordered()) {
      const item = messageItem(msg, ctx);
      if (seen !== null && msg.seq === seen.seq) {
        item.append(h("span", { class: "seen" }, c.isGroup ? `Seen by ${seen.by}` : "Seen"));
      }
      list.append(item);
    }
    for (const p of this.pending.filter((p) => p.conv === c.conv)) {
      list.append(h("li", { class: p.failed ? "msg mine pending failed" : "msg mine pending" },
        h("span", { class: "body" }, p.text),
        h("span", { class: "meta" }, p.failed ? `Not sent: ${p.failed}` : "Sending…")));
    }
    byId("older").hidden = c.reachedStart || c.messages.size === 0;
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  // -- opening and paging -------------------------------------------------------------------

  private async openChat(conv: string): Promise<void> {
    const c = this.store.get(conv);
    this.open = c;
    byId("layout").dataset.view = "chat";
    byId("composer").hidden = false;
    byId("chat").dataset.conv = conv;
    this.render();
    byId("text").focus();
    if (!c.loaded) {
      c.loaded = true;
      if (c.lastSeq === 0) c.reachedStart = true;  // a new direct chat: nothing to read yet
      else await this.loadPage(c, c.lastSeq + 1);
    }
    if (this.open === c) {
      const scroller = byId("scroller");
      scroller.scrollTop = scroller.scrollHeight;
      this.markRead();
      this.render();
    }
  }

  private closeChat(): void {
    const conv = this.open?.conv;
    this.open = null;
    byId("layout").dataset.view = "list";
    this.render();
    const button = document.querySelector<HTMLElement>(`button.conv[data-conv="${conv ?? ""}"]`);
    (button ?? byId("direct-name")).focus();
  }

  private async loadPage(c: Conversation, beforeSeq: number): Promise<void> {
    try {
      const page = await this.rest.history(c.conv, beforeSeq, PAGE);
      for (const msg of page) c.add(msg, false);
      if (page.length < PAGE || (page[0]?.seq ?? 1) <= 1) c.reachedStart = true;
    } catch (error) {
      this.sideError(error);
    }
    this.render();
  }

  private loading = false;

  private async loadOlder(): Promise<void> {
    const c = this.open;
    if (c === null || this.loading || c.reachedStart) return;
    this.loading = true;
    const scroller = byId("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    try {
      await this.loadPage(c, c.oldestSeq());
      await new Promise((done) => requestAnimationFrame(done));
      scroller.scrollTop = scroller.scrollHeight - fromBottom;  // keep the reader's place
    } finally {
      this.loading = false;
    }
  }

  // -- sending ------------------------------------------------------------------------------

  private typed(): void {
    const now = Date.now();
    if (this.open !== null && now - this.typingSentAt > TYPING_SENT_EVERY_MS) {
      this.typingSentAt = now;
      this.chat.typing(this.open.conv);
    }
  }

  private async sendText(): Promise<void> {
    const box = byId<HTMLTextAreaElement>("text");
    const text = box.value.trim();
    if (this.open === null || text === "") return;
    box.value = "";
    this.typingSentAt = 0;
    const conv = this.open.conv;
    await this.sending(conv, text, () => this.chat.send(conv, text));
  }

  private async sendFile(): Promise<void> {
    const input = byId<HTMLInputElement>("attach");
    const file = input.files?.[0];
    input.value = "";
    if (this.open === null || file === undefined) return;
    const conv = this.open.conv;
    await this.sending(conv, `Uploading ${file.name}…`, async () => {
      const upload = await this.rest.upload(file);
      await this.chat.send(conv, "", { kind: upload.content_type.startsWith("image/") ? "image" : "file", fileId: upload.file_id });
    });
  }

  /** Show a placeholder until the message is acked (it then arrives in the stream at its seq). */
  private async sending(conv: string, text: string, send: () => Promise<unknown>): Promise<void> {
    const pending: Pending = { key: ++this.pendingKey, conv, text };
    this.pending.push(pending);
    this.render();
    try {
      await send();
      this.pending = this.pending.filter((p) => p !== pending);
    } catch (error) {
      pending.failed = reasonOf(error);
    }
    this.render();
  }

  // -- new conversations --------------------------------------------------------------------

  private async startDirect(event: Event): Promise<void> {
    event.preventDefault();
    const input = byId<HTMLInputElement>("direct-name");
    const name = input.value.trim();
    try {
      const user = await this.rest.userNamed(name);
      if (user === null) throw new Error(`nobody is called ${name}`);
      if (user.id === this.me) throw new Error("that is you");
      this.names.remember(user);
      input.value = "";
      this.sideError(null);
      await this.openChat(directConv(this.me, user.id));
    } catch (error) {
      this.sideError(error);
    }
  }

  private async createGroup(event: Event): Promise<void> {
    event.preventDefault();
    const nameInput = byId<HTMLInputElement>("group-name");
    const membersInput = byId<HTMLInputElement>("group-members");
    try {
      const wanted = membersInput.value.split(",").map((s) => s.trim()).filter((s) => s !== "");
      const ids: number[] = [];
      for (const name of wanted) {
        const user = await this.rest.userNamed(name);
        if (user === null) throw new Error(`nobody is called ${name}`);
        this.names.remember(user);
        ids.push(user.id);
      }
      const group = await this.rest.createGroup(nameInput.value.trim(), ids);
      this.names.setGroup(group.id, group.name);
      nameInput.value = "";
      membersInput.value = "";
      this.sideError(null);
      const c = this.store.get(group.conv);
      c.updatedAt = Math.max(c.updatedAt, Date.now());
      await this.openChat(group.conv);
    } catch (error) {
      this.sideError(error);
    }
  }

  private sideError(error: unknown): void {
    byId("side-error").textContent = error === null ? "" : reasonOf(error);
  }

  private async logout(): Promise<void> {
    clearInterval(this.saver);
    await this.chat.logout().catch(() => undefined);
    this.onLogout();
  }
}

function previewOf(msg: Msg, me: number): string {
  const prefix = msg.from === me ? "You: " : "";
  if (msg.recalled) return `${prefix}(recalled)`;
  if (msg.hidden) return "(hidden)";
  if (msg.kind === "image") return `${prefix}[image] ${msg.body}`.trim();
  if (msg.kind === "file") return `${prefix}[file] ${msg.body}`.trim();
  return `${prefix}${msg.body}`;
}
