"""On MariaDB with its default, case-insensitive collation (issue 18, accounts): the username search
ignores case and takes LIKE's wildcards literally, and a deleted account frees a name that collation
would otherwise call taken."""

from __future__ import annotations

import pytest
from test_real_storage_limits import case_insensitive_url  # noqa: F401  # a fixture

from imray.domain.account_changes import like_pattern
from imray.domain.errors import Conflict
from imray.storage import accounts, profiles
from imray.storage.db import Database


def test_the_search_and_deletion_hold_under_a_case_insensitive_collation(case_insensitive_url):  # noqa: F811
    db = Database(case_insensitive_url)
    try:
        def create(name: str) -> int:
            return db.transaction(lambda c: accounts.create_user(c, name, "x", name))["id"]

        def search(prefix: str) -> list[int]:
            return [u["id"] for u in db.transaction(lambda c: profiles.search(c, like_pattern(prefix), 0, 50))]

        zed, other = create("Zed_one"), create("zedxone")
        with pytest.raises(Conflict):  # the collation calls these names equal
            create("zed_ONE")
        assert search("zed") == [zed, other]
        assert search("zed_") == [zed]  # `_` is a character here too, not "any one"
        assert search("%!\\_") == [] and search("z%") == []  # wildcards and escapes taken literally
        db.transaction(lambda c: profiles.delete_account(c, zed, 900))
        assert search("zed") == [other]
        assert create("zed_ONE") != zed  # the name is free again
    finally:
        db.close()
