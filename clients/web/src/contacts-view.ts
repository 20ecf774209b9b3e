/** The sidebar's contacts: asking someone by username, the requests received (accept, decline) and
 * sent (cancel), the contact list with an online dot from presence, removing and blocking (docs/protocol.md §5).
 * Contact and presence frames are best effort, so every change reads the lists again. */

import { reasonOf, type Api } from "./api.js";
import { clear, h } from "./dom.js";
import type { Names } from "./names.js";
import type { Avatars } from "./profile-view.js";
import type { ContactRequests } from "./wire.js";

interface Contact {
  user_id: number;
  username: string;
  nickname?: string | null;
  avatar_url?: string | null;
}

export class ContactsView {
  readonly element: HTMLElement;
  private contacts: Contact[] = [];
  private requests: ContactRequests = { received: [], sent: [] };
  private blocked: number[] = [];
  private readonly online = new Map<number, boolean>();
  private readonly error = h("p", { id: "contacts-error", class: "error", role: "alert" });
  private readonly lists = h("div", { class: "contact-lists" });
  private loading: Promise<void> | null = null;
  private again = false;

  constructor(private readonly rest: Api, private readonly names: Names, private readonly avatars: Avatars,
              private readonly openDirect: (user: number) => void) {
    const input = h("input", { id: "contact-name", name: "username", autocomplete: "off", required: true });
    const form = h("form", { id: "ask-contact", class: "side-form" },
      h("label", { for: "contact-name" }, "Add a contact (username)"),
      h("div", { class: "row" }, input, h("button", { type: "submit" }, "Ask")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.run(async () => {
        const name = input.value.trim();
        const user = await rest.userNamed(name);
        if (user === null) throw new Error(`nobody is called ${name}`);
        names.remember(user);
        await rest.askContact(user.id);
        input.value = "";
      });
    });
    this.element = h("section", { id: "contacts", class: "contacts", "aria-label": "Contacts" },
      h("h2", { class: "side-title" }, "Contacts"), form, this.error, this.lists);
  }

  /** Read the requests, contacts, blocks and presence again (one read at a time; a change meanwhile reads once more). */
  reload(): Promise<void> {
    if (this.loading !== null) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      do {
        this.again = false;
        try {
          const [contacts, requests, blocks, presence] = await Promise.all([
            this.rest.contacts(), this.rest.contactRequests(), this.rest.blocks(), this.rest.presence()]);
          this.contacts = contacts.contacts;
          this.requests = requests;
          this.blocked = blocks.user_ids;
          for (const item of presence.contacts) this.online.set(item.user_id, item.online);
        } catch (error) {
          this.error.textContent = reasonOf(error);
        }
      } while (this.again);
      this.loading = null;
      this.render();
    })();
    return this.loading;
  }

  presence(userId: number, online: boolean): void {
    this.online.set(userId, online);
    this.render();
  }

  private async run(change: () => Promise<unknown>): Promise<void> {
    this.error.textContent = "";
    try {
      await change();
    } catch (error) {
      this.error.textContent = reasonOf(error);
    }
    await this.reload();
  }

  render(): void {
    const focusedKey = this.lists.contains(document.activeElement) ? (document.activeElement as HTMLElement).dataset.key : undefined;
    clear(this.lists);
    const button = (label: string, key: string, change: () => Promise<unknown>, cls = "secondary", ask?: string): HTMLElement => {
      const b = h("button", { type: "button", class: cls, "data-key": key }, label);
      b.addEventListener("click", () => {
        if (ask === undefined || confirm(ask)) void this.run(change);
      });
      return b;
    };
    const nameOf = (user: { username: string; nickname?: string | null }): string => user.nickname || user.username;
    const { received, sent } = this.requests;
    if (received.length > 0) {
      this.lists.append(h("h3", {}, "Requests"), h("ul", { id: "requests-received", class: "people" },
        ...received.map((r) => h("li", { "data-user": r.from_id },
          h("span", { class: "person" }, nameOf(r), r.message ? h("span", { class: "hint" }, ` “${r.message}”`) : null),
          button("Accept", `accept ${r.from_id}`, () => this.rest.answerRequest(r.from_id, true), ""),
          button("Decline", `decline ${r.from_id}`, () => this.rest.answerRequest(r.from_id, false))))));
    }
    if (sent.length > 0) {
      this.lists.append(h("h3", {}, "Asked"), h("ul", { id: "requests-sent", class: "people" },
        ...sent.map((r) => h("li", { "data-user": r.to_id },
          h("span", { class: "person" }, nameOf(r), h("span", { class: "hint" }, " waiting")),
          button("Cancel", `cancel ${r.to_id}`, () => this.rest.cancelRequest(r.to_id))))));
    }
    const list = h("ul", { id: "contact-list", class: "people" });
    for (const contact of this.contacts) {
      const online = this.online.get(contact.user_id) === true;
      const chat = h("button", { type: "button", class: "person link", "data-key": `chat ${contact.user_id}` },
        h("span", { class: "dot", "data-online": String(online), role: "img", "aria-label": online ? "online" : "offline" }),
        this.avatars.of(contact, contact.username), nameOf(contact));
      chat.addEventListener("click", () => this.openDirect(contact.user_id));
      list.append(h("li", { "data-user": contact.user_id }, chat,
        button("Remove", `remove ${contact.user_id}`, () => this.rest.removeContact(contact.user_id),
          "secondary", `Remove ${nameOf(contact)} from your contacts? You stop seeing each other online.`),
        button("Block", `block ${contact.user_id}`, () => this.rest.block(contact.user_id, true),
          "secondary", `Block ${nameOf(contact)}? This also ends the contact.`)));
    }
    if (this.contacts.length === 0) list.append(h("li", { class: "hint" }, "No contacts yet"));
    this.lists.append(list);
    if (this.blocked.length > 0) {
      this.lists.append(h("h3", {}, "Blocked"), h("ul", { id: "blocked-list", class: "people" },
        ...this.blocked.map((id) => h("li", { "data-user": id },
          h("span", { class: "person" }, this.names.user(id)),
          button("Unblock", `unblock ${id}`, () => this.rest.block(id, false))))));
    }
    if (focusedKey !== undefined) {
      [...this.lists.querySelectorAll<HTMLElement>("[data-key]")].find((e) => e.dataset.key === focusedKey)?.focus();
    }
  }
}
