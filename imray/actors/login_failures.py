"""The embedded stack's failed-login counts, one actor shared by every AuthService replica (Redis's part otherwise)."""

from __future__ import annotations

import ray

from imray.adapters.rate_limits import LocalFailureCounts


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class LoginFailures:
    """`domain.login_guard.FailureCounts` for the cluster. A restart forgets the counts: limits start over."""

    def __init__(self) -> None:
        self._counts = LocalFailureCounts()

    def counts(self, keys: list[str], window: int) -> list[int]:
        return self._counts.get(keys, window)

    def add(self, keys: list[str], window: int, keep_s: int) -> None:
        self._counts.bump(keys, window)
