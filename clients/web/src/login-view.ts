/** The sign-in page: log in, or sign up (register, then log in) with the same form. */

import { reasonOf } from "./api.js";
import { byId, clear, h } from "./dom.js";
import { HttpApi, ImrayClient } from "./sdk/index.js";

export function showLogin(signedIn: (client: ImrayClient, username: string) => void): void {
  const root = byId("root");
  clear(root);
  const form = h("form", { id: "login", class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "imray"),
    h("p", { class: "hint" }, "Sign in, or sign up with a new username."),
    h("label", { for: "username" }, "Username"),
    h("input", { id: "username", name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 32,
      pattern: "[A-Za-z0-9_.\\-]+" }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true,
      minlength: 8, maxlength: 128 }),
    h("label", { for: "nickname" }, "Display name (sign up only, optional)"),
    h("input", { id: "nickname", name: "nickname", autocomplete: "nickname", maxlength: 64 }),
    h("div", { class: "row" },
      h("button", { type: "submit", id: "log-in", value: "login" }, "Log in"),
      h("button", { type: "submit", id: "sign-up", value: "signup", class: "secondary" }, "Sign up")),
    h("p", { id: "login-error", class: "error", role: "alert" }));
  root.append(h("main", { class: "login-page" }, form));
  byId("username").focus();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const submitter = (event as SubmitEvent).submitter as HTMLButtonElement | null;
    void enter(submitter?.value === "signup", signedIn);
  });
}

async function enter(signUp: boolean, signedIn: (client: ImrayClient, username: string) => void): Promise<void> {
  const username = byId<HTMLInputElement>("username").value.trim();
  const password = byId<HTMLInputElement>("password").value;
  const error = byId("login-error");
  const buttons = [byId<HTMLButtonElement>("log-in"), byId<HTMLButtonElement>("sign-up")];
  error.textContent = "";
  buttons.forEach((b) => (b.disabled = true));
  try {
    const nickname = byId<HTMLInputElement>("nickname").value.trim();
    if (signUp) await new HttpApi(location.origin).register(username, password, nickname === "" ? undefined : nickname);
    signedIn(await ImrayClient.login(location.origin, username, password), username);
  } catch (failure) {
    error.textContent = reasonOf(failure);
    buttons.forEach((b) => (b.disabled = false));
  }
}
