"""Group-ratio mistakes are told in the words of where they were typed: a flag, or a page field."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputError
from core.rules import parse_group_ratio

FIELD = "Other ratios for some groups"


@pytest.mark.parametrize(
    ("kind", "text", "cli", "ui"),
    [
        (
            "prune-low",
            "foo",
            "--group-ratio 'foo' is not GROUP=R (e.g. python-docs=0)",
            f"'foo' in “{FIELD}” is not GROUP=R (e.g. python-docs=0)",
        ),
        (
            "keep-middle",
            "a=1",
            "--group-ratio for keep-middle is GROUP=LOW:HIGH, not 'a=1'",
            f"“{FIELD}” takes GROUP=LOW:HIGH for keep-middle (e.g. python-docs=0:0), not 'a=1'.",
        ),
        ("keep-middle", "x", "is not GROUP=LOW:HIGH (e.g. python-docs=0:0)", "python-docs=0:0"),
    ],
)
def test_a_group_ratio_error_names_the_flag_or_the_page_field(kind, text, cli, ui):
    with pytest.raises(InputError) as caught:
        parse_group_ratio(kind, text)
    assert cli in str(caught.value) and "\n" not in str(caught.value)
    assert ui in caught.value.ui_message and "--group-ratio" not in caught.value.ui_message


def test_the_field_the_message_names_is_on_the_page():
    page = Path(__file__).resolve().parent.parent / "pages" / "4_Prune_and_Export.py"
    assert f'"{FIELD}"' in page.read_text()
