/** @imray/client: imray's TypeScript SDK (docs/sdk.md). */

export { ImrayClient } from "./client.js";
export type { ClientOptions, ConnectOptions, SendOptions, WebSocketConstructor, WebSocketLike } from "./client.js";
export { ImrayError, ImrayHttpError } from "./errors.js";
export type * from "./events.js";
export { HttpApi, PUBLIC_CLIENT_ID } from "./http.js";
export type { AssignResponse, Conversation, FileInfo, Group, HistoryOptions, HttpOptions, RequestOptions, TokenResponse, User } from "./http.js";
export { Streams } from "./streams.js";
export type { Gap } from "./streams.js";
