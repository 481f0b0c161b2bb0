"""Label sets of the emotion datasets, and matching of free-text labels to them."""
from __future__ import annotations

from collections.abc import Sequence

# Order follows DFEW's numeric codes 1..7 (FERV39k uses the same seven words).
DFEW: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
# MAFW adds four compound/rare emotions to the seven basic ones.
MAFW: tuple[str, ...] = DFEW + ("contempt", "anxiety", "helplessness", "disappointment")

BUILTIN: dict[str, tuple[str, ...]] = {"dfew": DFEW, "ferv39k": DFEW, "mafw": MAFW}

# Common surface forms of the same emotion word (datasets and models disagree).
SYNONYMS: dict[str, str] = {
    "happiness": "happy", "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprised": "surprise",
    "disgusted": "disgust",
    "fearful": "fear", "afraid": "fear", "scared": "fear",
    "contemptuous": "contempt",
    "anxious": "anxiety",
    "helpless": "helplessness",
    "disappointed": "disappointment",
    "calm": "neutral",
}


def canonical(word: str) -> str:
    """Lower-case, strip punctuation and map synonyms: ' Happiness.' -> 'happy'."""
    w = word.strip().strip(".,;:!?\"'()[]").lower()
    return SYNONYMS.get(w, w)


def resolve_label_set(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A built-in name ('dfew', 'ferv39k', 'mafw') or an explicit list of labels."""
    if isinstance(spec, str):
        try:
            return BUILTIN[spec.lower()]
        except KeyError:
            raise ValueError(
                f"unknown label set {spec!r}; use one of {sorted(BUILTIN)} or a list of labels"
            ) from None
    labels = tuple(canonical(s) for s in spec)
    if len(labels) < 2:
        raise ValueError(f"a label set needs at least 2 labels, got {list(spec)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"label set has duplicates after synonym matching: {list(spec)}")
    return labels


def match_label(text: str | None, labels: Sequence[str]) -> str | None:
    """The label a free-text answer names, or None when it names none of them."""
    if not text:
        return None
    word = canonical(text)
    return word if word in labels else None
