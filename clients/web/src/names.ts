/** Display names of users and groups, fetched once each; `changed` runs when a name arrives. */

import type { Api } from "./api.js";
import type { User } from "./wire.js";

export class Names {
  private readonly users = new Map<number, User>();
  private readonly groups = new Map<number, string>();
  private readonly asked = new Set<string>();

  constructor(private readonly rest: Api, private readonly changed: () => void) {}

  remember(user: User): void {
    this.users.set(user.id, user);
  }

  user(id: number): string {
    const known = this.users.get(id);
    if (known !== undefined) return known.nickname || known.username;
    this.fetch(`u${id}`, async () => this.remember(await this.rest.user(id)));
    return `user ${id}`;
  }

  /** The user's profile if known; asks for it otherwise (`changed` runs when it arrives). */
  profile(id: number): User | undefined {
    const known = this.users.get(id);
    if (known === undefined) this.user(id);
    return known;
  }

  group(id: number): string {
    const known = this.groups.get(id);
    if (known !== undefined) return known;
    this.fetch(`g${id}`, async () => {
      this.groups.set(id, (await this.rest.group(id)).name);
    });
    return `group ${id}`;
  }

  setGroup(id: number, name: string): void {
    this.groups.set(id, name);
  }

  private fetch(key: string, load: () => Promise<void>): void {
    if (this.asked.has(key)) return;
    this.asked.add(key);
    load().then(this.changed, () => undefined);  // a name we may not read stays a placeholder
  }
}
