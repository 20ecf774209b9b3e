"""Print imray's live actors as JSON lines: name, class, the address of the host it runs on, its pid.

Run by the fault tests on the head host (a Ray driver there, the way an operator looks), never on the
client host: `python tests/multihost/ray_actors.py [CLASS...]`. The pid is the one the actor's host
sees (each harness host has a PID namespace of its own); mhosts.host_pid maps it to the harness's.
"""

from __future__ import annotations

import json
import logging
import sys

import ray
from ray._private import state


def main(classes: list[str]) -> None:
    ray.init(address="auto", namespace="imray", log_to_driver=False, logging_level=logging.WARNING)
    try:
        for info in state.actors(actor_state_name="ALIVE").values():
            if classes and info["ActorClassName"] not in classes:
                continue
            print(json.dumps({"name": info["Name"], "class": info["ActorClassName"],
                              "ip": info["Address"]["IPAddress"], "pid": info["Pid"]}))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
