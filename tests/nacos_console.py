"""What an operator does in the Nacos console, for the real-stack tests: publish imray's live config."""

from __future__ import annotations

import os

import httpx

NACOS = "http://" + os.environ.get("IMRAY_NACOS_SERVER", "127.0.0.1:8848") + "/nacos"


def publish_config(content: str | None) -> None:
    """Publish imray.yaml to Nacos (None deletes it), as an operator would in the console."""
    params = {"dataId": "imray.yaml", "group": "DEFAULT_GROUP"}
    if content is None:
        httpx.delete(f"{NACOS}/v1/cs/configs", params=params, timeout=10).raise_for_status()
    else:
        httpx.post(f"{NACOS}/v1/cs/configs", data={**params, "content": content, "type": "yaml"},
                   timeout=10).raise_for_status()
