/** Wire objects and the typed events an ImrayClient delivers (docs/sdk.md, "Events"). */

/** A message as the wire carries it (§2.4 of docs/protocol.md, with the issue 18 keys when set). */
export interface Msg {
  type: "msg";
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
  reactions?: Record<string, number>;
  event?: { type: string; [key: string]: unknown };
  deleted?: boolean;
  hidden?: boolean;
  [key: string]: unknown;
}

/** The ack of a send: the message is stored durably. */
export interface Ack {
  type: "ack";
  id: string;
  msg_id: string;
  conv: string;
  seq: number;
  ts: number;
}

/** Any frame, as parsed from the socket. */
export interface Frame {
  type: string;
  [key: string]: unknown;
}

export type ClientState = "connecting" | "connected" | "reconnecting" | "closed";

export interface MessageEvent { type: "message"; message: Msg }
export interface ReceiptEvent { type: "receipt"; conv: string; user_id: number; seq: number }
export interface TypingEvent { type: "typing"; conv: string; user_id: number }
export interface PresenceEvent { type: "presence"; user_id: number; online: boolean; [key: string]: unknown }
export interface ContactEvent { type: "contact"; [key: string]: unknown }
export interface DeletedEvent { type: "deleted"; conv: string; seq: number }
export interface StateEvent { type: "state"; state: ClientState }
export interface ErrorEvent { type: "error"; code: string; message: string }
/** A frame the SDK does not know (forward compatible), or one it handled but may interest the app (`refresh_ok`). */
export interface FrameEvent { type: "frame"; frame: Frame }

export interface EventMap {
  message: MessageEvent;
  receipt: ReceiptEvent;
  typing: TypingEvent;
  presence: PresenceEvent;
  contact: ContactEvent;
  deleted: DeletedEvent;
  state: StateEvent;
  error: ErrorEvent;
  frame: FrameEvent;
}

export type EventType = keyof EventMap;
export type ImrayEvent = EventMap[EventType];
export type Handler<K extends EventType> = (event: EventMap[K]) => void;
