/** A group's info panel: name, description, members with their roles, and the administration each
 * role allows (docs/protocol.md §10). Only what the user's role permits is shown; the server decides
 * anyway, and its refusal is shown as it words it. */

import { h } from "./dom.js";
import type { Names } from "./names.js";
import { roleOf, type Group, type GroupSettings, type Role } from "./wire.js";

/** What the panel asks the app to do; each answers the group as it now is (or nothing: read it again). */
export interface GroupActions {
  update(fields: GroupSettings): Promise<unknown>;
  addByNames(usernames: string[]): Promise<unknown>;
  remove(userId: number): Promise<unknown>;
  setRole(userId: number, role: "admin" | "member"): Promise<unknown>;
  setMuted(userId: number, muted: boolean): Promise<unknown>;
  transfer(userId: number): Promise<unknown>;
  leave(): Promise<unknown>;
  dissolve(): Promise<unknown>;
  /** Runs a change, showing the server's reason in the panel if it refuses. */
  run(change: () => Promise<unknown>): void;
}

const POLICY_TEXT: Record<NonNullable<Group["add_policy"]>, string> = {
  everyone: "Any member can add people",
  admins: "Only the owner and admins can add people",
};

const ROLE_TEXT: Record<Role, string> = { owner: "owner", admin: "admin", member: "member" };

export function groupPanel(group: Group, me: number, names: Names, act: GroupActions): HTMLElement[] {
  const role = roleOf(group, me);
  const manager = role === "owner" || role === "admin";
  const open = !group.dissolved && role !== null;
  const parts: HTMLElement[] = [
    h("h3", { id: "info-name" }, group.name),
    h("p", { id: "info-description", class: "description" }, group.description || "No description"),
  ];
  if (group.dissolved) parts.push(h("p", { class: "note" }, "This group was dissolved."));
  if (open && manager) parts.push(settingsForm(group, act));
  else parts.push(h("p", { id: "info-add-policy", class: "note" }, POLICY_TEXT[group.add_policy ?? "everyone"]));
  if (open && (manager || group.add_policy !== "admins")) parts.push(addForm(act));

  const list = h("ul", { id: "info-members", class: "info-members", "aria-label": "Members" });
  for (const member of group.members) {
    const theirs = roleOf(group, member) ?? "member";
    const muted = (group.muted ?? []).includes(member);
    const row = h("li", { "data-user": member },
      h("span", { class: "member-name" }, member === me ? `${names.user(member)} (you)` : names.user(member)),
      h("span", { class: `role role-${theirs}` }, ROLE_TEXT[theirs]),
      muted ? h("span", { class: "role role-muted" }, "muted") : null);
    // The table of §10: the owner manages anyone but itself; an admin, plain members only.
    const manages = open && member !== me && (role === "owner" || (role === "admin" && theirs === "member"));
    const buttons = h("span", { class: "member-actions" });
    const button = (label: string, run: () => Promise<unknown>, confirmText?: string): void => {
      const b = h("button", { type: "button", class: "secondary" }, label);
      b.addEventListener("click", () => {
        if (confirmText === undefined || confirm(confirmText)) act.run(run);
      });
      buttons.append(b);
    };
    if (manages) {
      if (role === "owner") {
        if (theirs === "member") button("Make admin", () => act.setRole(member, "admin"));
        else button("Make member", () => act.setRole(member, "member"));
      }
      button(muted ? "Unmute" : "Mute", () => act.setMuted(member, !muted));
      button("Remove", () => act.remove(member));
      if (role === "owner") button("Make owner", () => act.transfer(member), `Make ${names.user(member)} the owner? You become an admin.`);
    }
    if (buttons.childElementCount > 0) row.append(buttons);
    list.append(row);
  }
  parts.push(h("h4", {}, `Members (${group.members.length})`), list);

  if (open) {
    const footer = h("div", { class: "row info-footer" });
    const leave = h("button", { type: "button", class: "secondary", id: "leave-group" }, "Leave group");
    leave.addEventListener("click", () => {
      if (confirm(`Leave ${group.name}?`)) act.run(() => act.leave());
    });
    footer.append(leave);
    if (role === "owner") {
      const end = h("button", { type: "button", class: "danger", id: "dissolve-group" }, "Dissolve group");
      end.addEventListener("click", () => {
        if (confirm(`Dissolve ${group.name} for everyone? Nobody can write in it any more.`)) act.run(() => act.dissolve());
      });
      footer.append(end);
    }
    parts.push(footer);
  }
  return parts;
}

function settingsForm(group: Group, act: GroupActions): HTMLElement {
  const name = h("input", { id: "info-rename", name: "name", required: true, maxlength: 64, value: group.name });
  const description = h("textarea", { id: "info-describe", name: "description", rows: 2, maxlength: 512 });
  description.value = group.description ?? "";
  const mutedAll = h("input", { type: "checkbox", id: "info-muted-all", checked: group.muted_all === true });
  const policy = h("select", { id: "info-add-policy", name: "add_policy" },
    ...(["everyone", "admins"] as const).map((value) =>
      h("option", { value, selected: (group.add_policy ?? "everyone") === value }, POLICY_TEXT[value])));
  const form = h("form", { class: "info-form" },
    h("label", { for: "info-rename" }, "Group name"), name,
    h("label", { for: "info-describe" }, "Description"), description,
    h("button", { type: "submit" }, "Save"),
    h("label", { class: "check" }, mutedAll, " Only the owner and admins may write"),
    h("label", { for: "info-add-policy" }, "Who can add people"), policy);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act.run(() => act.update({ name: name.value.trim(), description: description.value }));
  });
  mutedAll.addEventListener("change", () => act.run(() => act.update({ muted_all: mutedAll.checked })));
  policy.addEventListener("change", () =>
    act.run(() => act.update({ add_policy: policy.value === "admins" ? "admins" : "everyone" })));
  return form;
}

function addForm(act: GroupActions): HTMLElement {
  const input = h("input", { id: "info-add", name: "usernames", autocomplete: "off", required: true });
  const form = h("form", { class: "info-form" },
    h("label", { for: "info-add" }, "Add members (usernames, comma separated)"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Add")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const wanted = input.value.split(",").map((s) => s.trim()).filter((s) => s !== "");
    act.run(() => act.addByNames(wanted));
  });
  return form;
}
