"""The web chat app's static files (clients/web, built by `make` into imray/webapp), served at /app."""

from pathlib import Path

import httpx
from fastapi.responses import FileResponse, JSONResponse, Response

from imray.deployments.files import Download
from imray.deployments.http import file_response
from imray.domain.files import SANDBOXED

WEBAPP_DIR = Path(__file__).resolve().parent.parent / "webapp"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon", ".json": "application/json", ".map": "application/json"}
# Strict: no inline script or style, nothing from another origin but the socket nodes' WebSockets
# (their own ports), images from blob: URLs made from authorized fetches.
HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self' ws: wss:; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated each load: a rebuilt app shows at once
}


def webapp_response(path: str, root: Path = WEBAPP_DIR) -> Response:
    """The file at `path` under the built app (index.html for the root); a JSON 404 otherwise."""
    if not (root / "index.html").is_file():
        return JSONResponse({"detail": "the web app is not built: run `make` (it builds clients/web)"},
                            status_code=404, headers=HEADERS)
    target = (root / path).resolve()
    if target.is_relative_to(root.resolve()) and target.is_dir():
        target = target / "index.html"
    kind = TYPES.get(target.suffix)
    if kind is None or not target.is_relative_to(root.resolve()) or not target.is_file():
        return JSONResponse({"detail": "not found"}, status_code=404, headers=HEADERS)
    return FileResponse(target, media_type=kind, headers=HEADERS)


async def same_origin_download(result: Download, timeout_s: float = 30.0) -> Response:
    """A file's bytes from the app's own origin, also when the object store hands out a presigned URL:
    a browser's fetch cannot follow that redirect to a store on another origin that sends no CORS
    headers (s3s-fs; and the app's CSP keeps connect-src to 'self'), so the gateway reads it."""
    if "url" not in result:
        return file_response(result)
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            answer = await http.get(result["url"])
    except httpx.HTTPError:
        answer = None
    if answer is None or answer.status_code != 200:
        return JSONResponse({"detail": "the object store did not answer: try again"}, status_code=503)
    return Response(answer.content, media_type=answer.headers.get("content-type", "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=300", **SANDBOXED,
                             "Content-Disposition": answer.headers.get("content-disposition", "attachment")})
