/** @mentions in the composer: the name being typed before the caret, the members it may mean, and
 * the user ids a finished text names (sent as the `send` frame's `mentions`, docs/protocol.md §9). */

export interface Mentionable {
  id: number;
  username: string;
  nickname?: string | null;
}

const NAME = "[A-Za-z0-9_.\\-]";

/** The partial username after an "@" that ends the text before the caret ("" right after the "@"),
 * or null when the caret is not in a mention. */
export function mentionQuery(beforeCaret: string): string | null {
  const found = new RegExp(`(?:^|\\s)@(${NAME}*)$`).exec(beforeCaret);
  return found === null ? null : found[1];
}

/** The members a partial name may mean: username or nickname starting with it, case ignored. */
export function mentionCandidates(query: string, members: Mentionable[], limit = 6): Mentionable[] {
  const q = query.toLowerCase();
  return members
    .filter((m) => m.username.toLowerCase().startsWith(q) || (m.nickname ?? "").toLowerCase().startsWith(q))
    .slice(0, limit);
}

/** The text with the mention before the caret completed as "@username "; and the caret's new place. */
export function completeMention(text: string, caret: number, username: string): { text: string; caret: number } {
  const before = text.slice(0, caret).replace(new RegExp(`@${NAME}*$`), `@${username} `);
  return { text: before + text.slice(caret).replace(/^ /, ""), caret: before.length };
}

/** The ids of the members whose "@username" stands in the text as a whole word. */
export function mentionedIds(text: string, members: Mentionable[]): number[] {
  const words = new Set<string>();
  for (const found of text.matchAll(new RegExp(`(?:^|[^A-Za-z0-9_.\\-@])@(${NAME}+)`, "g"))) {
    words.add(found[1].toLowerCase().replace(/[.\-]+$/, ""));  // "@bob." at the end of a sentence
    words.add(found[1].toLowerCase());
  }
  return members.filter((m) => words.has(m.username.toLowerCase())).map((m) => m.id);
}
