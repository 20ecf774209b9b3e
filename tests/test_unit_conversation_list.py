"""The conversation list's cursor and pin rule, without Ray or a database."""

from __future__ import annotations

import pytest

from imray.domain.conversation_list import ListPosition, check_may_pin, parse_cursor
from imray.domain.errors import Conflict, Invalid


def test_a_cursor_names_the_position_it_was_made_from() -> None:
    for position in (ListPosition(0, 0, "d:1:2"), ListPosition(1764500000000, 1764500000001, "g:7"),
                     ListPosition(0, 123, "d:99:100")):
        assert parse_cursor(position.cursor()) == position


@pytest.mark.parametrize("text", ["", "x", "1.2", "1.2.3.d:1:2", "01.2.d:1:2", "1.2.d:2:1", "1.2.d:1:1",
                                  "1.2.g:0", "1.2.g:07", "-1.2.d:1:2", "1.2.d:1:2\n", "1.2.x:1",
                                  "1." + "9" * 17 + ".g:1", "\uff11.2.g:1"])
def test_anything_but_a_cursor_an_item_carried_is_refused(text: str) -> None:
    with pytest.raises(Invalid):
        parse_cursor(text)


def test_a_user_may_pin_up_to_the_limit() -> None:
    check_may_pin(9, 10)
    with pytest.raises(Conflict, match="at most 10"):
        check_may_pin(10, 10)
