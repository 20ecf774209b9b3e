"""What a cluster of several machines needs from the settings before imray may deploy on it.

The embedded adapters keep their state in files under `data_dir` on whichever machine a process
lands on: on a cluster whose nodes have more than one address, every shard and replica would open
its own SQLite file and its own object folder, and the data would split without an error. One
address (a laptop, `ray.cluster_utils` nodes that all share 127.0.0.1) keeps one data dir.
"""

from __future__ import annotations

from collections.abc import Iterable

from imray.settings import Settings


class ScaleOutRefused(ValueError):
    """The settings name embedded backends that cannot be shared between machines."""


def scale_out_problems(settings: Settings, node_addresses: Iterable[str]) -> list[str]:
    """Why `settings` cannot serve a cluster whose live nodes have `node_addresses`; empty when they can."""
    addresses = {address for address in node_addresses if address}
    if len(addresses) <= 1:
        return []
    problems = []
    if not settings.database_url:
        problems.append("the embedded SQLite database (set IMRAY_DATABASE_URL, for example "
                        "mysql+pymysql://user:password@db-host:3306/imray)")
    if not settings.s3_endpoint:
        problems.append("the local object store (set IMRAY_S3_ENDPOINT=host:port of an S3 API, with "
                        "IMRAY_S3_ACCESS_KEY, IMRAY_S3_SECRET_KEY and IMRAY_S3_BUCKET)")
    return problems


def check_scale_out(settings: Settings, node_addresses: Iterable[str]) -> None:
    """Raise ScaleOutRefused, naming the settings to set, unless `settings` fit the cluster."""
    addresses = sorted({address for address in node_addresses if address})
    problems = scale_out_problems(settings, addresses)
    if problems:
        raise ScaleOutRefused(
            f"this Ray cluster has nodes on {len(addresses)} addresses ({', '.join(addresses)}), and each "
            f"machine would keep its own copy of: {'; '.join(problems)}. Set them (environment or the "
            "YAML settings file: database_url, s3_endpoint...) and run `imray up` again.")
