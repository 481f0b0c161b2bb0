import pytest

from emodist.models.scoring import parse_answer

OPTIONS = ["happy", "sad", "neutral"]


@pytest.mark.parametrize("answer, expected", [
    ("B", "sad"), ("b.", "sad"), ("(C) neutral", "neutral"), ("A: happy", "happy"),
    ("Sadness", "sad"), ("happiness.", "happy"),
    ("D", ""), ("banana", ""), ("", ""), ("   ", ""), ("contempt", ""),
])
def test_answers_that_are_not_options_are_recorded_not_fatal(answer, expected):
    assert parse_answer(answer, OPTIONS) == expected
