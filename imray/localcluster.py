"""A Ray cluster of a head and socket-node workers in this process tree (tests and benchmarks).

Only inside a loopback-only network namespace on machines where Ray must not touch the network.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def loopback_only() -> bool:
    """True inside a namespace that has no route out (see scripts/netns-run)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, only the route is looked up
        return False
    except OSError:
        return True
    finally:
        probe.close()


@contextmanager
def local_cluster(workers: int = 2, head_cpus: int = 2, env: dict[str, str] | None = None
                  ) -> Iterator[tuple[object, list[str]]]:
    """Yields (cluster, worker node ids); the driver is connected in namespace "imray".

    `env` is set before Ray starts (runtime.ray_environment: what Serve reads at start)."""
    ray_tmp = tempfile.mkdtemp(prefix="imray-ray-")  # short: Ray's unix socket paths have a length limit
    os.makedirs(os.path.join(ray_tmp, "ray"))
    os.environ["RAY_TMPDIR"] = ray_tmp
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.update(env or {})
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": head_cpus, "include_dashboard": False,
        "object_store_memory": 200 * 1024**2, "gcs_server_port": 6380, "temp_dir": ray_tmp,
    })
    nodes = [cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, resources={"socket_node": 1},
                              object_store_memory=100 * 1024**2) for _ in range(workers)]
    ray.init(address=cluster.address, namespace="imray", log_to_driver=False)
    try:
        yield cluster, [n.node_id for n in nodes]
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            if not os.environ.get("IMRAY_KEEP_RAY_LOGS"):
                shutil.rmtree(ray_tmp, ignore_errors=True)
