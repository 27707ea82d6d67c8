"""Surface-form categories of explanations by deterministic keyword rules (issue 14, item 6)."""

import math

import pytest

from saelib.lm import interp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The substring 'ing' at the end of verbs", {"substring"}),
        ("Word pieces and suffixes such as -tion", {"substring"}),
        ("Commas and periods inside quotations", {"punctuation"}),
        ("Newlines and indentation in code blocks", {"formatting"}),
        ("The token 'the' after a comma", {"single token", "punctuation"}),
        ("A specific word: 'because'", {"single token"}),
        ("Mentions of European football clubs and their players", set()),
        ("SUBSTRING in upper case text", {"substring", "formatting"}),
    ],
)
def test_categories_by_keyword_rules(text, expected):
    assert interp.surface_form_categories(text) == expected


def test_no_false_hits_inside_longer_words():
    # "tab" in "table" and "comma" in "command" are not surface forms
    assert interp.surface_form_categories("Database tables and shell commands") == set()
    assert interp.surface_form_categories("Time-related words") == set()


def test_surface_form_share_counts_and_skips_failures():
    explanations = [
        "The substring 'ab' inside longer words",
        "Punctuation: commas",
        "Names of rivers",
        "A single token, the word 'of'",
        None,
        "",
    ]
    out = interp.surface_form_share(explanations)
    assert out["n"] == 4
    assert out["substring"] == pytest.approx(1 / 4)
    assert out["punctuation"] == pytest.approx(1 / 4)
    assert out["formatting"] == 0
    assert out["single token"] == pytest.approx(1 / 4)
    assert out["any"] == pytest.approx(3 / 4)
    assert out["substring (word)"] == pytest.approx(1 / 4)
    empty = interp.surface_form_share([None])
    assert empty["n"] == 0 and math.isnan(empty["substring"]) and math.isnan(empty["any"])
