"""Runs of frames without a face, as spans and as the words the timeline uses."""
import pytest

from emodist import presence


def test_spans_are_runs_of_frames_without_a_face():
    ts = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert presence.absent_spans(ts, [True] * 7) == []
    assert presence.absent_spans(ts, [True, False, False, True, False, True, False]) == [
        [0.25, 0.5], [1.0, 1.0], [1.5, 1.5]]
    assert presence.absent_text(ts, [True, False, False, True, False, True, True]) == "no face at 0.25-0.50 s, 1.00 s"
    assert presence.absent_text(ts, [True] * 7) == ""
    assert presence.joined("steady sad (1.0)", "no face at 1.00 s") == "steady sad (1.0); no face at 1.00 s"
    assert presence.joined("", "no face at 1.00 s") == "no face at 1.00 s"
    with pytest.raises(ValueError, match="2 times for 1 face flags"):
        presence.absent_spans([0.0, 1.0], [True])
