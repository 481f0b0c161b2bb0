"""Manifest and split-file lines, and the datasets' label codes."""
import pytest

from emodist.io import lines as fm
from emodist.io.rows import relative_id
from emodist.io.suffixes import natural_key
from emodist.io.shards import member_escapes, split_key


@pytest.mark.parametrize("labels, code, name", [
    ("dfew", "1", "happy"), ("dfew", "3", "neutral"), ("dfew", "6", "disgust"), ("dfew", "7", "fear"),
    ("ferv39k", "0", "angry"), ("ferv39k", "3", "happy"), ("ferv39k", "6", "surprise"),
    ("mafw", "1", "angry"), ("mafw", "4", "happy"), ("mafw", "8", "contempt"), ("mafw", "11", "disappointment"),
    ("dfew", "Happiness", "happy"), ("mafw", "helplessness", "helplessness"), ("ferv39k", "Sad", "sad"),
])
def test_label_codes_follow_each_datasets_own_table(labels, code, name):
    assert fm.label_from_code(code, labels) == name


def test_label_codes_out_of_range_or_unknown_set_are_clear():
    with pytest.raises(fm.LineError, match=r"label code 0 is not a DFEW code \(1\.\.7"):
        fm.label_from_code("0", "dfew")
    with pytest.raises(fm.LineError, match="label code 12 is not a MAFW code"):
        fm.label_from_code("12", "mafw")
    with pytest.raises(fm.LineError, match="codes are only known for labels: dfew, ferv39k or mafw"):
        fm.label_from_code("2", ["a", "b", "c"])


def test_split_lines():
    assert fm.parse_split_line("clips/00001 16 5\n", "dfew") == ("clips/00001", "surprise")
    assert fm.parse_split_line("Action/Sad/0010 Sad", "ferv39k") == ("Action/Sad/0010", "sad")
    assert fm.parse_split_line("00025.mp4 anger", "mafw") == ("00025.mp4", "angry")
    with pytest.raises(fm.LineError, match="found 4 fields"):
        fm.parse_split_line("a b c d", "dfew")
    with pytest.raises(fm.LineError, match="num_frames 'x' is not a whole number"):
        fm.parse_split_line("a x 3", "dfew")
    assert fm.looks_like_split("/data/DFEW/jpg_256/02522 5") and fm.looks_like_split("a 16 3")
    assert not fm.looks_like_split("uri,label") and not fm.looks_like_split("a,b,c")
    # relative paths keep their folders (FERV39k repeats clip names across folders)
    # ids: the path under the manifest's folder (or input.root), else the whole path
    assert relative_id("/data/ferv/Action/Sad/0010", "/data/ferv") == "Action/Sad/0010"
    assert relative_id("/mnt/DFEW/clips/00001.mp4", "/data/lists") == "mnt/DFEW/clips/00001"
    assert relative_id("s3://b/dfew/clips/00001.mp4", "s3://b/dfew") == "clips/00001"


def test_natural_order_and_member_names():
    assert sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_key) == ["1.jpg", "2.jpg", "10.jpg"]
    for bad in ("../x.mp4", "/abs/x.mp4", "a/../../x.mp4", "C:/x.mp4", "..\\x.mp4"):
        assert member_escapes(bad), bad
    assert not member_escapes("a/b..c/x.mp4")
    assert split_key("a/000123.seg.mp4") == ("a/000123", "seg.mp4")
