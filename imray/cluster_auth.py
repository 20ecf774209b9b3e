"""Ray token authentication for the cluster `imray up` starts on this machine.

Ray picks its mode from RAY_AUTH_MODE, else from whether ~/.ray/auth_token exists; a plain
`ray.init()` run once on the machine writes that file. `ray start` then came up in token mode
while imray's own connection had no token, and `imray up` failed. Saying it explicitly makes every
imray process agree, and no other local user can run code on the cluster. Ray reads the mode when
it is imported, so this must reach os.environ before `import ray`. An operator's RAY_AUTH_MODE wins.
"""

from __future__ import annotations

import os
import secrets

from imray.settings import Settings

TOKEN_FILE = "ray-auth-token"


def token_environment(settings: Settings) -> dict[str, str]:
    """RAY_AUTH_MODE=token with the token kept in the data dir (created once, mode 0600)."""
    if "RAY_AUTH_MODE" in os.environ:
        return {}
    path = settings.data_path / TOKEN_FILE
    if not path.exists():
        settings.data_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}
