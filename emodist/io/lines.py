"""Manifest and split-file lines, one at a time: numeric label codes of DFEW / FERV39k /
MAFW, split-file lines, JSON lines, and uris relative to a manifest.

Split files. The datasets and the code built on them use whitespace-separated lines:
`path num_frames label` (TSN-style lists, e.g. Former-DFER's DFEW_set_1_train.txt) or
`path label` (FERV39k's own `4_setups/All_scenes/train_All.csv`: `Action/Sad/0010 Sad`;
MAFW's own `set_1/train.txt`: `00025.mp4 anger`). A label is a word or a numeric code:
- DFEW, 1..7: happy sad neutral angry surprise disgust fear (DFEW's EmoLabel_DataSplit).
- FERV39k, 0..6: angry disgust fear happy neutral sad surprise. FERV39k itself ships
  words only; this is the alphabetical index that loaders derive from those words. (Some
  repos re-index FERV39k in DFEW's order from 0, e.g. MAE-DFER's preprocess; such files
  are not told apart by content: convert them to words first.)
- MAFW, 1..11: anger disgust fear happiness neutral sadness surprise contempt anxiety
  helplessness disappointment.
Codes of any other label set are refused (which dataset they index is unknown).
"""
from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

from emodist.labels import canonical


LABEL_CODES: dict[str, dict[int, str]] = {
    "dfew": dict(enumerate(("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"), 1)),
    "ferv39k": dict(enumerate(("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"), 0)),
    "mafw": dict(enumerate(
        ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
         "contempt", "anxiety", "helplessness", "disappointment"), 1)),
}


class LineError(ValueError):
    """One manifest/split line cannot be used; the message says why and how to fix it."""


# --- labels ---------------------------------------------------------------------------


def label_from_code(token: str, labels: str | Sequence[str]) -> str:
    """A split file's label token as a label name: words are canonicalised, numeric codes
    are mapped with the dataset's own code table (`labels` = 'dfew' | 'ferv39k' | 'mafw')."""
    token = token.strip()
    if not token.lstrip("-").isdigit():
        return canonical(token)
    name = labels.lower() if isinstance(labels, str) else None
    if name not in LABEL_CODES:
        raise LineError(
            f"numeric label code {token} but the label set is {labels!r}; codes are only "
            "known for labels: dfew, ferv39k or mafw (set 'labels'), or write label words"
        )
    table = LABEL_CODES[name]
    code = int(token)
    if code not in table:
        lo, hi = min(table), max(table)
        raise LineError(
            f"label code {code} is not a {name.upper()} code ({lo}..{hi}: "
            + ", ".join(f"{k} {v}" for k, v in table.items()) + ")"
        )
    return table[code]


def class_index_label(value, label_names: Sequence[str]) -> str:
    """A WebDataset `.cls` value: an index into the configured label set (from 0) or a word."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(label_names):
            raise LineError(f"class index {i} is outside the label set (0..{len(label_names) - 1})")
        return label_names[i]
    return canonical(text)


# --- split files and manifests --------------------------------------------------------


def looks_like_split(first_line: str) -> bool:
    """True for 'path num_frames label' or 'path label' lines (no header, no commas)."""
    tokens = first_line.split()
    if "," in first_line or len(tokens) not in (2, 3):
        return False
    return len(tokens) == 2 or tokens[1].isdigit()


def parse_split_line(line: str, labels: str | Sequence[str]) -> tuple[str, str]:
    """(path, label name) of one split line; LineError says what is wrong."""
    tokens = line.split()
    if len(tokens) == 3:
        if not tokens[1].isdigit():
            raise LineError(f"num_frames {tokens[1]!r} is not a whole number (expected 'path num_frames label')")
        path, label = tokens[0], tokens[2]
    elif len(tokens) == 2:
        path, label = tokens
    else:
        raise LineError(
            f"expected 'path num_frames label' or 'path label', found {len(tokens)} fields: {line.strip()[:120]!r}"
        )
    return path, label_from_code(label, labels)


def resolve_uri(u: str, base: str) -> str:
    """A manifest/split path made absolute: relative paths resolve against `base` (a
    folder URI or path); URIs and absolute paths stay as they are. Either way in its
    normal form, so that one file spelled two ways is one clip (a duplicate line)."""
    from emodist.storage import normal_uri

    u = u.strip()
    if u and "://" not in u and not u.startswith("/"):
        return normal_uri(posixpath.join(base, u) if base else u)
    return normal_uri(u)


def parse_jsonl_line(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object with a 'uri' key, got {type(obj).__name__}")
    return obj
