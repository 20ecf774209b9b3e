/** How one message shows: a bubble for text, images and files; a small system line for events. */

import { h, when } from "./dom.js";
import type { Media } from "./media.js";
import type { Names } from "./names.js";
import type { Conversation } from "./store.js";
import type { ChatEvent, Msg, Role } from "./wire.js";

/** The reactions the menu offers (any emoji others gave shows too, and can be joined from its chip). */
export const QUICK_EMOJI = ["👍", "❤️", "😂", "😮"];
/** The server's default `recall_window_s`: past it, the menu offers a sender no recall (the server decides anyway). */
const RECALL_WINDOW_MS = 120_000;

/** What the user asked for from a message's menu or its reaction chips. */
export type Action =
  | { kind: "menu"; seq: number }
  | { kind: "reply" | "edit" | "recall" | "delete"; seq: number }
  | { kind: "react"; seq: number; emoji: string; on: boolean };

export interface RenderContext {
  me: number;
  names: Names;
  media: Media;
  isGroup: boolean;
  /** The open conversation (replies quote from it; it knows my reactions); absent in previews. */
  conversation?: Conversation;
  /** My role in the group (owners and admins recall anyone's message), null in a direct chat. */
  role?: Role | null;
  /** The message whose menu is open. */
  menuSeq?: number | null;
  act?: (action: Action) => void;
}

export function messageItem(msg: Msg, ctx: RenderContext): HTMLLIElement {
  if (msg.kind === "event" && msg.event !== undefined) {
    return h("li", { class: "system", "data-seq": msg.seq }, `${eventText(msg.event, msg.from, ctx)} · ${when(msg.ts)}`);
  }
  const mine = msg.from === ctx.me;
  const mentioned = !mine && !msg.recalled && (msg.mentions ?? []).includes(ctx.me);
  const item = h("li", { class: `msg${mine ? " mine" : ""}${mentioned ? " mentioned" : ""}`, "data-seq": msg.seq, "data-from": msg.from });
  if (ctx.isGroup && !mine) item.append(h("span", { class: "author" }, ctx.names.user(msg.from)));
  if (msg.reply_to !== undefined && !msg.deleted) item.append(quote(msg.reply_to, ctx));
  item.append(content(msg, ctx));
  const meta = h("span", { class: "meta" }, when(msg.ts));
  if (msg.edited && !msg.recalled) meta.append(" · edited");
  if (mentioned) meta.append(" · mentions you");
  item.append(meta);
  const reactions = Object.entries(msg.reactions ?? {});
  if (reactions.length > 0 && !msg.recalled && !msg.deleted) {
    const chips = h("span", { class: "reactions", role: "group", "aria-label": "Reactions" });
    for (const [emoji, count] of reactions) {
      const on = ctx.conversation?.reacted(msg.seq, emoji) ?? false;
      const chip = h("button", { type: "button", class: "reaction", "aria-pressed": String(on), "data-key": `chip ${msg.seq} ${emoji}`,
        title: on ? `Take back ${emoji}` : `React ${emoji}` }, `${emoji} ${count}`);
      chip.addEventListener("click", () => ctx.act?.({ kind: "react", seq: msg.seq, emoji, on: !on }));
      chips.append(chip);
    }
    item.append(chips);
  }
  if (ctx.act !== undefined && !msg.deleted) item.append(...menu(msg, ctx));
  return item;
}

/** The quoted message a reply answers: its author and the start of its text. */
function quote(seq: number, ctx: RenderContext): HTMLElement {
  const target = ctx.conversation?.messages.get(seq);
  let text = "an earlier message";
  if (target !== undefined) {
    const gone = target.recalled ? "message recalled" : target.deleted ? "deleted message" : null;
    text = `${ctx.names.user(target.from)}: ${gone ?? (target.body || `[${target.kind}]`)}`;
  }
  return h("blockquote", { class: "quote", "data-reply-to": seq }, text);
}

/** The "…" button of a message and, when open, its menu (buttons: reachable by Tab, Escape closes). */
function menu(msg: Msg, ctx: RenderContext): HTMLElement[] {
  const act = ctx.act!;
  const open = ctx.menuSeq === msg.seq;
  const toggle = h("button", { type: "button", class: "more", "aria-haspopup": "menu", "aria-expanded": String(open),
    "aria-label": "Message actions", "data-key": `more ${msg.seq}` }, "⋯");
  toggle.addEventListener("click", () => act({ kind: "menu", seq: open ? 0 : msg.seq }));
  if (!open) return [toggle];
  const mine = msg.from === ctx.me;
  const live = !msg.recalled && !msg.hidden;
  const items: [string, string, Action][] = [];
  if (live) items.push(["reply", "Reply", { kind: "reply", seq: msg.seq }]);
  if (live) {
    for (const emoji of QUICK_EMOJI) {
      const on = ctx.conversation?.reacted(msg.seq, emoji) ?? false;
      items.push([`react ${emoji}`, on ? `Take back ${emoji}` : `React ${emoji}`, { kind: "react", seq: msg.seq, emoji, on: !on }]);
    }
  }
  if (live && mine && msg.kind === "text") items.push(["edit", "Edit", { kind: "edit", seq: msg.seq }]);
  const mayRecall = (mine && Date.now() - msg.ts < RECALL_WINDOW_MS) || ctx.role === "owner" || ctx.role === "admin";
  if (!msg.recalled && mayRecall) items.push(["recall", "Recall", { kind: "recall", seq: msg.seq }]);
  items.push(["delete", "Delete for me", { kind: "delete", seq: msg.seq }]);
  const list = h("div", { class: "menu", role: "menu", "aria-label": "Message actions" });
  for (const [key, label, action] of items) {
    const emoji = action.kind === "react";
    const button = h("button", { type: "button", role: "menuitem", class: emoji ? "menu-emoji" : undefined,
      "aria-label": label, title: label, "data-key": `${key} ${msg.seq}` }, emoji ? action.emoji : label);
    button.addEventListener("click", () => act(action));
    list.append(button);
  }
  list.addEventListener("keydown", (e) => {
    if (e.key === "Escape") act({ kind: "menu", seq: 0 });
  });
  return [toggle, list];
}

function content(msg: Msg, ctx: RenderContext): HTMLElement {
  if (msg.recalled) return h("span", { class: "body gone" }, "message recalled");
  if (msg.deleted) return h("span", { class: "body gone" }, "You deleted this message");
  if (msg.hidden) return h("span", { class: "body gone" }, "Hidden (you blocked the sender)");
  const body = h("div", { class: "body" });
  if (msg.file_id !== undefined && msg.kind === "image") body.append(image(msg.file_id, ctx));
  else if (msg.file_id !== undefined) body.append(fileButton(msg.file_id, ctx));
  if (msg.body) body.append(h("span", { class: "text" }, msg.body));
  return body;
}

function image(fileId: string, ctx: RenderContext): HTMLElement {
  const img = h("img", { class: "picture", alt: "image", "data-file": fileId });
  ctx.media.get(fileId).then(
    ({ url, name }) => {
      img.src = url;
      img.alt = `image ${name}`;
    },
    () => {
      img.alt = "image (could not be loaded)";
    },
  );
  return img;
}

function fileButton(fileId: string, ctx: RenderContext): HTMLElement {
  const button = h("button", { type: "button", class: "file" }, "Download file");
  ctx.media.get(fileId).then(({ name }) => (button.textContent = `Download ${name}`), () => undefined);
  button.addEventListener("click", () => void ctx.media.download(fileId));
  return button;
}

/** A change event in words: "alice added bob, carol", "bob recalled a message"... */
export function eventText(event: ChatEvent, from: number, ctx: RenderContext): string {
  const who = from === ctx.me ? "You" : ctx.names.user(from);
  const user = (field: string): string => {
    const id = event[field];
    return typeof id === "number" ? (id === ctx.me ? "you" : ctx.names.user(id)) : "someone";
  };
  const users = (field: string): string => {
    const ids = event[field];
    return Array.isArray(ids) ? ids.map((id) => (id === ctx.me ? "you" : ctx.names.user(Number(id)))).join(", ") : "";
  };
  switch (event.type) {
    case "created":
      return `${who} created the group “${String(event.name ?? "")}”`;
    case "joined":
      return `${who} added ${users("user_ids")}`;
    case "left":
      return `${user("user_id")} left`;
    case "removed":
      return `${who} removed ${user("user_id")}`;
    case "role":
      return `${who} made ${user("user_id")} ${event.role === "admin" ? "an admin" : "a member"}`;
    case "owner":
      return `${user("user_id")} now owns the group`;
    case "updated":
      return typeof event.name === "string" ? `${who} renamed the group “${event.name}”` : `${who} changed the group's settings`;
    case "muted":
      return `${who} ${event.muted ? "muted" : "unmuted"} ${user("user_id")}`;
    case "dissolved":
      return `${who} dissolved the group`;
    case "recall":
      return `${who} recalled a message`;
    case "edit":
      return `${who} edited a message`;
    case "react":
      return `${who} reacted ${String(event.emoji ?? "")}`;
    case "unreact":
      return `${who} took back ${String(event.emoji ?? "")}`;
    default:
      return `${who}: ${event.type}`;
  }
}
