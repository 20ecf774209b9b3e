/** How one message shows: a bubble for text, images and files; a small system line for events. */

import { h, when } from "./dom.js";
import type { Media } from "./media.js";
import type { Names } from "./names.js";
import type { ChatEvent, Msg } from "./wire.js";

export interface RenderContext {
  me: number;
  names: Names;
  media: Media;
  isGroup: boolean;
}

export function messageItem(msg: Msg, ctx: RenderContext): HTMLLIElement {
  if (msg.kind === "event" && msg.event !== undefined) {
    return h("li", { class: "system", "data-seq": msg.seq }, `${eventText(msg.event, msg.from, ctx)} · ${when(msg.ts)}`);
  }
  const mine = msg.from === ctx.me;
  const item = h("li", { class: mine ? "msg mine" : "msg", "data-seq": msg.seq, "data-from": msg.from });
  if (ctx.isGroup && !mine) item.append(h("span", { class: "author" }, ctx.names.user(msg.from)));
  item.append(content(msg, ctx));
  const meta = h("span", { class: "meta" }, when(msg.ts));
  if (msg.edited && !msg.recalled) meta.append(" · edited");
  item.append(meta);
  const reactions = Object.entries(msg.reactions ?? {});
  if (reactions.length > 0) {
    item.append(h("span", { class: "reactions" }, reactions.map(([emoji, count]) => `${emoji} ${count}`).join("  ")));
  }
  return item;
}

function content(msg: Msg, ctx: RenderContext): HTMLElement {
  if (msg.recalled) return h("span", { class: "body gone" }, "This message was recalled");
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
