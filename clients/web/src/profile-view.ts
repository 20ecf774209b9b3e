/** The user's own profile (nickname, avatar upload: docs/protocol.md §6, §3) and the avatars shown
 * beside people: fetched with the bearer token into blob: URLs (the CSP allows no other image origin),
 * initials while none is set or it cannot be read. */

import { reasonOf, type Api } from "./api.js";
import { h } from "./dom.js";
import type { User } from "./wire.js";

export class Avatars {
  private readonly urls = new Map<string, Promise<string>>();

  constructor(private readonly rest: Api) {}

  /** Show a new avatar of mine at once, from the file just uploaded. */
  prime(avatarUrl: string, file: Blob): void {
    this.urls.set(avatarUrl, Promise.resolve(URL.createObjectURL(file)));
  }

  /** A round avatar: the picture when there is one and it loads, else the name's initial. */
  of(user: Pick<User, "username" | "nickname" | "avatar_url"> | undefined, fallback: string): HTMLElement {
    const name = user?.nickname || user?.username || fallback;
    const badge = h("span", { class: "avatar", "aria-hidden": "true" }, [...name][0]?.toUpperCase() ?? "?");
    const url = user?.avatar_url;
    if (url) {
      let found = this.urls.get(url);
      if (found === undefined) {
        found = this.rest.blobAt(url).then((blob) => URL.createObjectURL(blob));
        found.catch(() => undefined);
        this.urls.set(url, found);
      }
      found.then((src) => badge.replaceChildren(h("img", { src, alt: "" })), () => undefined);
    }
    return badge;
  }
}

/** The profile form: nickname and avatar; `saved` gets the user as the server answers it. */
export function profileForm(me: User, rest: Api, avatars: Avatars, saved: (user: User) => void): HTMLElement {
  const error = h("p", { id: "profile-error", class: "error", role: "alert" });
  const preview = h("span", { id: "profile-avatar", class: "profile-avatar" }, avatars.of(me, me.username));
  const nickname = h("input", { id: "profile-nickname", name: "nickname", maxlength: 64, value: me.nickname ?? "" });
  const file = h("input", { type: "file", id: "profile-file", accept: "image/png,image/jpeg,image/gif,image/webp" });
  const form = h("form", { id: "profile-form", class: "info-form" },
    h("div", { class: "row" }, preview, h("label", { for: "profile-file" }, "Avatar (PNG, JPEG, GIF or WebP)")), file,
    h("label", { for: "profile-nickname" }, "Display name"), nickname,
    h("button", { type: "submit" }, "Save name"), error);
  const done = (user: User): void => {
    me = user;
    error.textContent = "";
    preview.replaceChildren(avatars.of(user, user.username));
    saved(user);
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    rest.setNickname(nickname.value).then(done, (failure) => (error.textContent = reasonOf(failure)));
  });
  file.addEventListener("change", () => {
    const picked = file.files?.[0];
    file.value = "";
    if (picked === undefined) return;
    rest.setAvatar(picked).then((user) => {
      if (user.avatar_url) avatars.prime(user.avatar_url, picked);
      done(user);
    }, (failure) => (error.textContent = reasonOf(failure)));
  });
  return h("details", { id: "profile", class: "side-form" }, h("summary", {}, "Profile"), form);
}
