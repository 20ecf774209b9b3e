/** The signed-in app: conversation list, the open chat, new direct and group chats, and the
 * connection banner. Messages come only from the SDK's ordered stream and history pages, kept by seq. */

import { Api, reasonOf } from "./api.js";
import { byId, clear, h } from "./dom.js";
import { ContactsView } from "./contacts-view.js";
import { groupPanel, type GroupActions } from "./group-panel.js";
import { Media } from "./media.js";
import { Names } from "./names.js";
import { Avatars, profileForm } from "./profile-view.js";
import { completeMention, mentionCandidates, mentionedIds, mentionQuery, type Mentionable } from "./mentions.js";
import { messageItem, type Action, type RenderContext } from "./render.js";
import type { ImrayClient } from "./sdk/index.js";
import { saveClient } from "./session.js";
import { Conversation, Store } from "./store.js";
import { directConv, peerOf, roleOf, type Group, type Msg, type User } from "./wire.js";

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
  private readonly contacts: ContactsView;
  private readonly avatars: Avatars;
  private open: Conversation | null = null;
  private pending: Pending[] = [];
  private pendingKey = 0;
  private typingSentAt = 0;
  private renderQueued = false;
  private saver: ReturnType<typeof setInterval> | undefined;
  /** The message whose action menu is open. */
  private menuSeq: number | null = null;
  /** What the composer does with its text besides sending: answer a message, or replace one's text. */
  private compose: { mode: "reply" | "edit"; seq: number } | null = null;
  /** An element (by data-key, or "menu <seq>": its first item) to focus after the next render. */
  private focusKey: string | null = null;
  /** Groups read so far; "gone" once I am no longer a member (removed, left) and may not read it. */
  private readonly groups = new Map<number, Group | "gone">();
  private mentionOptions: Mentionable[] = [];
  private mentionPick = 0;
  /** The group info panel is open (for the open group). */
  private panelOpen = false;
  private readonly infoError = h("p", { id: "info-error", class: "error", role: "alert" });

  constructor(private readonly chat: ImrayClient, private readonly username: string, private readonly onLogout: () => void) {
    this.store = new Store(chat.userId);
    this.rest = new Api(chat);
    this.names = new Names(this.rest, () => {
      this.render();
      this.renderPanel();
      this.contacts.render();
      this.refreshMentions();  // a member's name may arrive after the "@" was typed
    });
    this.avatars = new Avatars(this.rest);
    this.contacts = new ContactsView(this.rest, this.names, this.avatars, (user) => void this.openChat(directConv(this.me, user)));
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
      if (e.state === "connected") void this.contacts.reload();  // presence frames missed while away
      saveClient(chat, this.username);
    });
    chat.on("frame", () => saveClient(chat, this.username));  // refresh_ok: the tokens rotated
    chat.on("message", (e) => this.take(e.message as Msg));
    chat.on("receipt", (e) => {
      const c = this.store.get(e.conv);
      c.receipts.set(e.user_id, Math.max(c.receipts.get(e.user_id) ?? 0, e.seq));
      if (e.user_id === this.me) {  // read in another of my sessions
        c.unread = 0;
        c.mentioned = false;
      }
      this.render();
    });
    chat.on("typing", (e) => {
      this.store.get(e.conv).typing.set(e.user_id, Date.now() + TYPING_SHOWN_MS);
      this.render();
      setTimeout(() => this.render(), TYPING_SHOWN_MS + 50);
    });
    chat.on("contact", () => void this.contacts.reload());
    chat.on("presence", (e) => this.contacts.presence(e.user_id, e.online));
    chat.on("deleted", (e) => {
      const msg = this.store.get(e.conv).messages.get(e.seq);
      if (msg !== undefined) msg.deleted = true;
      this.render();
    });
    document.addEventListener("visibilitychange", () => this.markRead());
    window.addEventListener("pagehide", () => saveClient(chat, this.username));
    const [list, me] = await Promise.all([this.rest.conversations(), this.rest.me()]);
    this.showMe(me);
    byId("profile-slot").replaceChildren(profileForm(me, this.rest, this.avatars, (user) => this.showMe(user)));
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
    if (fresh && counts && !this.onScreen(c)) {
      c.unread += 1;
      if ((msg.mentions ?? []).includes(this.me)) c.mentioned = true;
    }
    if (msg.event?.type === "updated" && typeof msg.event.name === "string") {
      this.names.setGroup(Number(msg.conv.slice(2)), msg.event.name);
    }
    if (c.isGroup && msg.event !== undefined && GROUP_EVENTS.has(msg.event.type)) this.groupChanged(msg);
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
    c.mentioned = false;
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
        h("span", { class: "whoami", id: "whoami" }, `Signed in as ${this.username}`),
        h("span", { id: "conn", class: "conn", role: "status", "data-state": "connecting" }, STATE_TEXT.connecting),
        h("button", { type: "button", id: "logout" }, "Log out")),
      h("main", { id: "layout", class: "layout", "data-view": "list" },
        h("nav", { class: "sidebar", "aria-label": "Conversations" },
          h("div", { id: "profile-slot" }),
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
          h("h2", { class: "side-title" }, "Chats"),
          h("ul", { id: "conv-list", class: "conv-list" }),
          this.contacts.element),
        h("section", { id: "chat", class: "chat", "aria-label": "Chat" },
          h("header", { class: "chat-head" },
            h("button", { type: "button", id: "back", class: "back" }, "‹ Back"),
            h("h2", { id: "chat-title", tabindex: -1 }, "No conversation open"),
            h("span", { id: "typing", class: "typing", "aria-live": "polite" }),
            h("button", { type: "button", id: "info-toggle", class: "secondary info-toggle", hidden: true, "aria-expanded": "false",
              "aria-controls": "group-panel" }, "Group info")),
          h("section", { id: "group-panel", class: "group-panel", "aria-label": "Group info", hidden: true }),
          h("p", { id: "chat-error", class: "error chat-error", role: "alert" }),
          h("div", { id: "scroller", class: "scroller" },
            h("button", { type: "button", id: "older", class: "older", hidden: true }, "Load older messages"),
            h("ol", { id: "messages", class: "messages", "aria-label": "Messages" })),
          h("p", { id: "chat-note", class: "chat-note", hidden: true }),
          h("div", { id: "compose-mode", class: "compose-mode", hidden: true },
            h("span", { id: "compose-what" }),
            h("button", { type: "button", id: "compose-cancel", class: "secondary" }, "Cancel")),
          h("ul", { id: "mention-list", class: "mention-list", role: "listbox", "aria-label": "Members to mention", hidden: true }),
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
    byId("info-toggle").addEventListener("click", () => {
      this.panelOpen = !this.panelOpen;
      this.infoError.textContent = "";
      this.renderPanel();
      if (this.panelOpen) document.getElementById("info-name")?.focus();
    });
    byId("older").addEventListener("click", () => void this.loadOlder());
    byId("scroller").addEventListener("scroll", () => {
      if (byId("scroller").scrollTop < 40 && !byId("older").hidden) void this.loadOlder();
    });
    const text = byId<HTMLTextAreaElement>("text");
    text.addEventListener("keydown", (e) => {
      if (this.mentionKey(e)) return;
      if (e.key === "Escape" && this.compose !== null) this.setCompose(null);
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        byId<HTMLFormElement>("composer").requestSubmit();
      }
    });
    text.addEventListener("input", () => {
      this.typed();
      this.updateMentions();
    });
    text.addEventListener("blur", () => setTimeout(() => this.showMentions([]), 150));
    byId("compose-cancel").addEventListener("click", () => this.setCompose(null));
    byId("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      void this.sendText();
    });
    byId<HTMLInputElement>("attach").addEventListener("change", () => void this.sendFile());
  }

  private showMe(me: User): void {
    this.names.remember(me);
    const nick = me.nickname && me.nickname !== me.username ? `${me.nickname} (${me.username})` : me.username;
    byId("whoami").replaceChildren(this.avatars.of(me, me.username), ` Signed in as ${nick}`);
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
      const title = this.title(c);
      const face = c.isGroup ? this.avatars.of(undefined, title) : this.avatars.of(this.names.profile(peerOf(c.conv, this.me)), title);
      const button = h("button", { type: "button", class: "conv", "data-conv": c.conv, "aria-current": this.open === c ? "true" : undefined },
        face,
        h("span", { class: "conv-title" }, title),
        h("span", { class: "conv-badges" },
          c.mentioned ? h("span", { class: "mention-badge", role: "img", "aria-label": "mentions you", title: "You were mentioned" }, "@") : null,
          c.unread > 0 ? h("span", { class: "unread", "aria-label": `${c.unread} unread` }, String(c.unread)) : null),
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
    const group = c.isGroup ? this.groups.get(Number(c.conv.slice(2))) : undefined;
    const ctx: RenderContext = { me: this.me, names: this.names, media: this.media, isGroup: c.isGroup, conversation: c,
      role: group !== undefined && group !== "gone" ? roleOf(group, this.me) : null, menuSeq: this.menuSeq,
      act: (action) => void this.act(action) };
    const seen = c.seenMark(this.me);
    // The list is rebuilt: keep the focus on the same control (a menu item, a reaction chip).
    const active = document.activeElement as HTMLElement | null;
    const keep = this.focusKey ?? (active !== null && list.contains(active) ? active.dataset.key ?? null : null);
    this.focusKey = null;
    clear(list);
    for (const msg of c.ordered()) {
      if (msg.event !== undefined && MESSAGE_CHANGES.has(msg.event.type)) continue;  // shown on the message they change
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
    if (keep !== null) {
      const target = keep.startsWith("menu ")
        ? list.querySelector<HTMLElement>(`li[data-seq="${Number(keep.slice(5))}"] [role="menuitem"]`)
        : [...list.querySelectorAll<HTMLElement>("[data-key]")].find((e) => e.dataset.key === keep);
      target?.focus({ preventScroll: true });
    }
    const plain = group !== undefined && group !== "gone" && roleOf(group, this.me) === "member";
    const note = group === "gone" ? "You are no longer a member of this group."
      : group?.dissolved ? "This group was dissolved."
      : plain && group.muted?.includes(this.me) ? "You are muted in this group."
      : plain && group.muted_all ? "Only the owner and admins may write here." : "";
    byId("chat-note").textContent = note;
    byId("chat-note").hidden = note === "";
    byId("composer").hidden = note !== "";
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  // -- opening and paging -------------------------------------------------------------------

  private async openChat(conv: string): Promise<void> {
    const c = this.store.get(conv);
    if (this.open !== c) {
      this.panelOpen = false;
      this.menuSeq = null;
      this.setCompose(null);
      this.chatError(null);
    }
    this.open = c;
    this.renderPanel();
    if (c.isGroup && !this.groups.has(Number(conv.slice(2)))) void this.loadGroup(Number(conv.slice(2)));
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
    const c = this.open;
    if (c === null || text === "") return;
    box.value = "";
    this.typingSentAt = 0;
    this.showMentions([]);
    const compose = this.compose;
    this.setCompose(null);
    if (compose?.mode === "edit") {
      await this.change(() => this.rest.edit(c.conv, compose.seq, text));
      return;
    }
    const replyTo = compose?.mode === "reply" ? compose.seq : undefined;
    const mentions = c.isGroup ? mentionedIds(text, this.members(c)).filter((id) => id !== this.me) : [];
    await this.sending(c.conv, text, () => this.chat.send(c.conv, text, { replyTo, mentions: mentions.length > 0 ? mentions : undefined }));
  }

  // -- message actions (docs/protocol.md §9) -------------------------------------------------

  private async act(action: Action): Promise<void> {
    const c = this.open;
    if (c === null) return;
    const shut = this.menuSeq;
    this.menuSeq = null;
    if (action.kind === "menu") {
      this.menuSeq = action.seq === 0 ? null : action.seq;
      this.focusKey = action.seq === 0 ? `more ${shut ?? 0}` : `menu ${action.seq}`;
      this.render();
      return;
    }
    if (shut !== null) this.focusKey = `more ${shut}`;
    this.render();
    const msg = c.messages.get(action.seq);
    if (msg === undefined) return;
    switch (action.kind) {
      case "reply":
      case "edit":
        this.setCompose({ mode: action.kind, seq: action.seq });
        if (action.kind === "edit") byId<HTMLTextAreaElement>("text").value = msg.body;
        byId("text").focus();
        return;
      case "recall":
        return this.change(() => this.rest.recall(c.conv, action.seq));
      case "react":
        return this.change(() => this.rest.react(c.conv, action.seq, action.emoji, action.on));
      case "delete":
        await this.change(async () => {
          await this.rest.deleteForMe(c.conv, action.seq);
          msg.deleted = true;  // the `deleted` frame says the same to my other sessions
        });
        this.render();
    }
  }

  /** A change made over HTTP: it comes back through the stream as an event; a refusal shows its reason. */
  private async change(call: () => Promise<unknown>): Promise<void> {
    try {
      this.chatError(null);
      await call();
    } catch (error) {
      this.chatError(error);
    }
  }

  private setCompose(compose: { mode: "reply" | "edit"; seq: number } | null): void {
    const wasEdit = this.compose?.mode === "edit";
    this.compose = compose;
    const bar = byId("compose-mode");
    bar.hidden = compose === null;
    if (compose === null) {
      if (wasEdit) byId<HTMLTextAreaElement>("text").value = "";
      return;
    }
    const msg = this.open?.messages.get(compose.seq);
    const who = msg === undefined ? "" : this.names.user(msg.from);
    byId("compose-what").textContent = compose.mode === "edit" ? "Editing your message"
      : `Replying to ${who}: ${msg?.body || `[${msg?.kind ?? "message"}]`}`;
  }

  private chatError(error: unknown): void {
    byId("chat-error").textContent = error === null ? "" : reasonOf(error);
  }

  // -- mentions ---------------------------------------------------------------------------------

  /** The open group's members I know the usernames of (fetched as they are first needed). */
  private members(c: Conversation): Mentionable[] {
    const group = this.groups.get(Number(c.conv.slice(2)));
    if (group === undefined || group === "gone") return [];
    return group.members.flatMap((id) => {
      const user = this.names.profile(id);
      return user === undefined ? [] : [{ id, username: user.username, nickname: user.nickname }];
    });
  }

  private updateMentions(): void {
    const c = this.open;
    const box = byId<HTMLTextAreaElement>("text");
    const query = c?.isGroup ? mentionQuery(box.value.slice(0, box.selectionStart)) : null;
    this.showMentions(c === null || query === null ? [] : mentionCandidates(query, this.members(c).filter((m) => m.id !== this.me)));
  }

  /** Offers again what the "@" being typed may mean, once members or their names have arrived; only
   * while the message box has the focus, so a list closed by leaving the box stays closed. */
  private refreshMentions(): void {
    if (document.activeElement === byId("text")) this.updateMentions();
  }

  private showMentions(options: Mentionable[]): void {
    this.mentionOptions = options;
    this.mentionPick = Math.min(this.mentionPick, Math.max(0, options.length - 1));
    const list = byId("mention-list");
    clear(list);
    list.hidden = options.length === 0;
    options.forEach((m, i) => {
      const option = h("li", { role: "option", id: `mention-${m.id}`, "aria-selected": String(i === this.mentionPick), "data-user": m.id },
        `@${m.username}`, m.nickname && m.nickname !== m.username ? h("span", { class: "nick" }, ` ${m.nickname}`) : null);
      option.addEventListener("mousedown", (e) => {
        e.preventDefault();  // keep the focus in the message box
        this.pickMention(i);
      });
      list.append(option);
    });
    const box = byId("text");
    if (options.length > 0) box.setAttribute("aria-activedescendant", `mention-${options[this.mentionPick].id}`);
    else box.removeAttribute("aria-activedescendant");
  }

  /** Arrows move through the offered members, Enter or Tab takes one, Escape closes the list. */
  private mentionKey(e: KeyboardEvent): boolean {
    const count = this.mentionOptions.length;
    if (count === 0 || e.isComposing) return false;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      this.mentionPick = (this.mentionPick + (e.key === "ArrowDown" ? 1 : count - 1)) % count;
      this.showMentions(this.mentionOptions);
    } else if (e.key === "Enter" || e.key === "Tab") {
      this.pickMention(this.mentionPick);
    } else if (e.key === "Escape") {
      this.showMentions([]);
    } else {
      return false;
    }
    e.preventDefault();
    return true;
  }

  private pickMention(index: number): void {
    const member = this.mentionOptions[index];
    const box = byId<HTMLTextAreaElement>("text");
    if (member === undefined) return;
    const done = completeMention(box.value, box.selectionStart, member.username);
    box.value = done.text;
    box.setSelectionRange(done.caret, done.caret);
    this.showMentions([]);
    box.focus();
  }

  // -- groups -------------------------------------------------------------------------------

  private async loadGroup(id: number): Promise<void> {
    try {
      const group = await this.rest.group(id);
      this.groups.set(id, group);
      this.names.setGroup(id, group.name);
      group.members.forEach((member) => this.names.profile(member));  // for mentions and the member list
    } catch {
      this.groups.set(id, "gone");  // 403: not (or no longer) a member
    }
    this.render();
    this.renderPanel();
    this.refreshMentions();
  }

  /** The open group's info panel, rebuilt from the group as the server last answered it. */
  private renderPanel(): void {
    const c = this.open;
    const group = c?.isGroup ? this.groups.get(Number(c.conv.slice(2))) : undefined;
    const panel = byId("group-panel");
    const toggle = byId("info-toggle");
    toggle.hidden = group === undefined || group === "gone";
    const show = this.panelOpen && group !== undefined && group !== "gone";
    toggle.setAttribute("aria-expanded", String(show));
    panel.hidden = !show;
    if (!show) return;
    const focused = panel.contains(document.activeElement) ? (document.activeElement as HTMLElement).id : "";
    panel.replaceChildren(...groupPanel(group, this.me, this.names, this.groupActions(group.id)), this.infoError);
    if (focused !== "") document.getElementById(focused)?.focus();
  }

  private groupActions(id: number): GroupActions {
    const rest = this.rest;
    return {
      update: (fields) => rest.updateGroup(id, fields),
      addByNames: async (usernames) => {
        const ids: number[] = [];
        for (const name of usernames) {
          const user = await rest.userNamed(name);
          if (user === null) throw new Error(`nobody is called ${name}`);
          this.names.remember(user);
          ids.push(user.id);
        }
        return rest.addMembers(id, ids);
      },
      remove: (userId) => rest.removeMember(id, userId),
      setRole: (userId, role) => rest.setRole(id, userId, role),
      setMuted: (userId, muted) => rest.setMuted(id, userId, muted),
      transfer: (userId) => rest.transfer(id, userId),
      leave: () => rest.removeMember(id, this.me),
      dissolve: () => rest.dissolve(id),
      run: (change) => void this.groupChange(id, change),
    };
  }

  /** A change from the panel: the answer (or a fresh read) replaces the group; a refusal shows its reason. */
  private async groupChange(id: number, change: () => Promise<unknown>): Promise<void> {
    this.infoError.textContent = "";
    try {
      const answer = await change();
      if (typeof answer === "object" && answer !== null && "members" in answer) {
        const group = answer as Group;
        this.groups.set(id, group);
        this.names.setGroup(id, group.name);
        this.render();
        this.renderPanel();
      } else {
        await this.loadGroup(id);
      }
    } catch (error) {
      this.infoError.textContent = reasonOf(error);
    }
  }

  /** A group event: read the group again (the server's answer is the truth), or learn I am out of it. */
  private groupChanged(msg: Msg): void {
    const id = Number(msg.conv.slice(2));
    const event = msg.event!;
    const out = (event.type === "removed" || event.type === "left") && event.user_id === this.me;
    if (out) this.groups.set(id, "gone");
    else if (this.groups.has(id) || this.open === this.store.get(msg.conv)) void this.loadGroup(id);
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

/** The events that change a message (§9): shown on that message, not as lines of their own. */
const MESSAGE_CHANGES = new Set(["recall", "edit", "react", "unreact"]);
/** The events that change a group (§10); the others change messages (§9). */
const GROUP_EVENTS = new Set(["created", "joined", "left", "removed", "role", "owner", "updated", "muted", "dissolved"]);

function previewOf(msg: Msg, me: number): string {
  const prefix = msg.from === me ? "You: " : "";
  if (msg.recalled) return `${prefix}(recalled)`;
  if (msg.hidden) return "(hidden)";
  if (msg.kind === "image") return `${prefix}[image] ${msg.body}`.trim();
  if (msg.kind === "file") return `${prefix}[file] ${msg.body}`.trim();
  return `${prefix}${msg.body}`;
}
