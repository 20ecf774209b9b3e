/** The shapes of imray's wire objects the app reads (docs/protocol.md §2.4, §3, §9, §10). */

export interface ChatEvent {
  type: string;
  [field: string]: unknown;
}

export interface Msg {
  conv: string;
  seq: number;
  msg_id: string;
  from: number;
  kind: string;
  body: string;
  ts: number;
  file_id?: string;
  reply_to?: number;
  mentions?: number[];
  edited?: number;
  recalled?: boolean;
  hidden?: boolean;
  deleted?: boolean;
  reactions?: Record<string, number>;
  event?: ChatEvent;
}

export interface ConversationItem {
  conv: string;
  last_seq: number;
  read_seq: number;
  unread: number;
  /** An unread message names me (docs/protocol.md §3). */
  mentioned?: boolean;
  last_message: Msg | null;
  cursor?: string;
}

export interface User {
  id: number;
  username: string;
  nickname?: string | null;
  avatar_url?: string | null;
}

export interface Group {
  id: number;
  conv: string;
  name: string;
  owner_id: number;
  members: number[];
  description?: string;
  add_policy?: "everyone" | "admins";
  muted_all?: boolean;
  dissolved?: boolean;
  admins?: number[];
  muted?: number[];
}

/** The settings PATCH /api/groups/{id} changes (absent: unchanged). */
export type GroupSettings = Partial<Pick<Group, "name" | "description" | "add_policy" | "muted_all">>;

/** A member's role in a group (docs/protocol.md §10). */
export type Role = "owner" | "admin" | "member";

export function roleOf(group: Group, user: number): Role | null {
  if (group.owner_id === user) return "owner";
  if ((group.admins ?? []).includes(user)) return "admin";
  return group.members.includes(user) ? "member" : null;
}

/** One pending contact request; the profile fields are the other side's. */
export interface ContactRequest {
  from_id: number;
  to_id: number;
  message: string;
  username: string;
  nickname: string;
  avatar_url: string | null;
}

export interface ContactRequests {
  received: ContactRequest[];
  sent: ContactRequest[];
}

export interface PresenceItem {
  user_id: number;
  online: boolean;
  last_seen: number | null;
}

export interface Upload {
  file_id: string;
  url: string;
  content_type: string;
  size: number;
}

/** The other user of direct conversation `d:a:b`, seen by `me`. */
export function peerOf(conv: string, me: number): number {
  const [, a, b] = conv.split(":");
  return Number(a) === me ? Number(b) : Number(a);
}

export function directConv(me: number, other: number): string {
  return `d:${Math.min(me, other)}:${Math.max(me, other)}`;
}
