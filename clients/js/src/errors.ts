/** The two errors the SDK raises: an HTTP answer that is not 2xx, and an error frame or SDK failure. */

/** A non-2xx HTTP answer (or one that is not the JSON it should be). */
export class ImrayHttpError extends Error {
  /** The HTTP status (0 when the request never got an answer). */
  readonly status: number;
  /** `detail` of an `/api/*` error (a string, or FastAPI's list of validation errors). */
  readonly detail: unknown;
  /** `error` of an OAuth2 error (`invalid_grant`, `invalid_client`...). */
  readonly error: string | undefined;
  /** The parsed body, or the raw text when it was not JSON. */
  readonly body: unknown;

  constructor(status: number, what: string, body: unknown) {
    const fields = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
    const detail = fields.detail;
    const error = typeof fields.error === "string" ? fields.error : undefined;
    const reason = typeof detail === "string" ? detail : error ?? (detail !== undefined ? JSON.stringify(detail) : String(body ?? ""));
    super(`${what}: ${status}${reason ? ` ${reason}` : ""}`);
    this.name = "ImrayHttpError";
    this.status = status;
    this.detail = detail;
    this.error = error;
    this.body = body;
  }
}

/** An error frame (`code`: forbidden, not_found, bad_request, too_large, unauthorized...) or an SDK
 * failure (`closed`: the client was closed; `protocol`: the server sent something unexpected). */
export class ImrayError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "ImrayError";
    this.code = code;
  }
}
