"""The authorization endpoint's edge: request models, the login and consent page, its cookie and headers.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
The decisions are `domain.authorization_code`'s; this module only renders them. No JavaScript.
"""

import html
from collections.abc import Iterable
from typing import Annotated

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from imray.domain.authorization_code import (
    CSRF_COOKIE,
    MAX_CLIENT_ID,
    MAX_REDIRECT_URI,
    MAX_SCOPE,
    MAX_STATE,
    Consent,
    Outcome,
    Redirect,
    Refusal,
    csrf_token,
    new_csrf_cookie,
)
from imray.domain.oauth import MAX_PASSWORD

COOKIE = "imray_authorize"  # keys the page's CSRF token: this browser's, unreadable by other sites
COOKIE_PATH = "/oauth2/authorize"
COOKIE_MAX_AGE_S = 1800
# Never framed (clickjacking), no script, no caching: the page takes a password.
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {}}, "description": "The login and consent page"},
    302: {"description": "GET: back to the client's redirect_uri with `error`, `state` and `iss`"},
    303: {"description": "POST: back to the client's redirect_uri with `code` (or `error`), `state` and `iss`"},
    400: {"description": "An error that is not redirected: unknown client or redirect URI (HTML, or JSON "
                         "`{error, error_description}` unless Accept names text/html)"},
    403: {"description": "CSRF token missing or wrong (POST), or a disabled account"},
}

Short = Annotated[str | None, Field(max_length=64)]


class AuthorizeQuery(BaseModel):
    """RFC 6749 §4.1.1 + RFC 7636 §4.3. Unknown parameters are ignored (RFC 6749 §3.1)."""

    response_type: Short = None
    client_id: Annotated[str | None, Field(max_length=MAX_CLIENT_ID)] = None
    redirect_uri: Annotated[str | None, Field(max_length=MAX_REDIRECT_URI)] = None
    scope: Annotated[str | None, Field(max_length=MAX_SCOPE)] = None
    state: Annotated[str | None, Field(max_length=MAX_STATE)] = None
    code_challenge: Annotated[str | None, Field(max_length=128)] = None
    code_challenge_method: Short = None

    def params(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class AuthorizeForm(AuthorizeQuery):
    """The page's form: the request again (hidden fields), its CSRF token, credentials and the decision."""

    csrf_token: Short = None
    username: Annotated[str | None, Field(max_length=256)] = None
    password: Annotated[str | None, Field(max_length=MAX_PASSWORD)] = None
    decision: Short = None  # "allow" or "deny"

    def params(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True, exclude={"csrf_token"})


def repeated(items: Iterable[tuple[str, str]]) -> str | None:
    """A parameter given twice (RFC 6749 §3.1 forbids it), or None."""
    seen: set[str] = set()
    for key, _ in items:
        if key in seen:
            return key
        seen.add(key)
    return None


def respond(outcome: Outcome, request: Request, secure: bool) -> Response:
    """The outcome as the browser (or an API client) should get it."""
    if isinstance(outcome, Redirect):
        # After the form's POST, 303: a 307 would make the browser post the password to the client
        # (RFC 9700 §4.12); 302 leaves the method to the browser.
        return RedirectResponse(outcome.url, status_code=303 if request.method == "POST" else 302, headers=HEADERS)
    if isinstance(outcome, Refusal):
        return refusal(outcome, request)
    cookie = request.cookies.get(COOKIE, "")
    fresh = not CSRF_COOKIE.fullmatch(cookie)
    if fresh:  # kept while valid: two pages open in two tabs both work
        cookie = new_csrf_cookie()
    headers = dict(HEADERS)
    if outcome.retry_after_s is not None:
        headers["Retry-After"] = str(outcome.retry_after_s)
    response = HTMLResponse(_consent_page(outcome, csrf_token(cookie, outcome.request)), outcome.status, headers)
    if fresh:
        response.set_cookie(COOKIE, cookie, max_age=COOKIE_MAX_AGE_S, path=COOKIE_PATH, secure=secure,
                            httponly=True, samesite="lax")
    return response


def refusal(outcome: Refusal, request: Request) -> Response:
    """Shown, never redirected: HTML for a browser, RFC 6749's JSON error shape for anything else."""
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(_page("Cannot sign in", f"<p><strong>{_e(outcome.error)}</strong>: "
                                                    f"{_e(outcome.description)}</p>"), outcome.status, HEADERS)
    return JSONResponse({"error": outcome.error, "error_description": outcome.description}, outcome.status, HEADERS)


def _consent_page(consent: Consent, token: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">'
                     for k, v in {**consent.request.fields(), "csrf_token": token}.items())
    message = f'<p class="error" role="alert">{_e(consent.message)}</p>' if consent.message else ""
    body = (f"<p><strong>{_e(consent.client_name)}</strong> asks to chat as you on imray "
            f"(scope <code>{_e(consent.request.scope)}</code>). Sign in to allow it.</p>{message}"
            f'<form method="post" action="{COOKIE_PATH}">{hidden}'
            '<label>Username <input name="username" autocomplete="username" required></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" '
            'required></label>'
            '<button name="decision" value="allow">Allow</button> '
            '<button name="decision" value="deny" formnovalidate>Deny</button></form>')
    return _page("Sign in to imray", body)


def _page(title: str, body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}"
            "label{display:block;margin:.6em 0}input{display:block;width:100%}.error{color:#b00}</style>"
            f"</head><body><h1>{_e(title)}</h1>{body}</body></html>")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
