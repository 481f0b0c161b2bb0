"""The transformers backend, loaded from a local folder through the Auto classes."""
import numpy as np
import pytest

from emodist.config import LabelerConfig
from emodist.models import prompts
from emodist.models.base import ClipInput
from emodist.models.hf import HFLabeler, HFVLM, clean_description
from emodist.models.scoring import PermutationScorer, letter_token_ids


def test_tiny_model_loads_from_its_folder_like_a_real_one(tiny_vlm):
    vlm = HFVLM(str(tiny_vlm))
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    frames = [np.full((224, 224, 3), v, np.uint8) for v in (0, 128)]
    parts = [prompts.describe_prompt(2, 0.0, 1.0)]
    texts = vlm.generate(parts, [frames], max_new_tokens=5)
    assert len(texts) == 1 and isinstance(texts[0], str)
    lp = vlm.next_token_logprobs(parts * 2, [frames, frames[::-1]])
    assert lp.shape[0] == 2 and np.allclose(np.exp(lp).sum(axis=1), 1, atol=1e-4)


def test_letter_tokens_are_single_and_distinct(tiny_vlm):
    vlm = HFVLM(str(tiny_vlm))
    ids = letter_token_ids(vlm.tokenizer, 11)
    flat = [i for g in ids for i in g]
    assert len(ids) == 11 and len(flat) == len(set(flat))
    for letter, group in zip("ABCDEFGHIJK", ids):
        assert all(vlm.tokenizer.decode([i]).strip() == letter for i in group)


def test_permutations_are_stable_per_clip_and_start_with_the_configured_order():
    scorer = PermutationScorer(None, ["a", "b", "c", "d"], permutations=3, seed=1)
    p1, p2 = scorer.perms("clip-1"), scorer.perms("clip-1")
    assert all((x == y).all() for x, y in zip(p1, p2))
    assert (p1[0] == np.arange(4)).all() and all(sorted(p) == [0, 1, 2, 3] for p in p1)


def test_scores_map_shown_letters_back_to_labels():
    """A model that always says 'A' votes for whichever label is shown first."""
    scorer = PermutationScorer(None, ["a", "b", "c"], permutations=2, seed=0)
    perms = scorer.perms("x")
    letter_lp = np.log(np.array([[0.98, 0.01, 0.01]] * 2))
    probs = scorer.results(letter_lp, ["x"])[0].probs
    expected = np.zeros(3)
    for p in perms:
        expected[p[0]] += 0.98 / 2
        expected[p[1:]] += 0.01 / 2
    np.testing.assert_allclose(probs, expected)


@pytest.mark.parametrize("mode", ["msce", "sparse", "dense", "text"])
def test_labeler_scores_every_mode(tiny_vlm, mode):
    lab = HFLabeler(LabelerConfig(model=str(tiny_vlm), permutations=2), mode, ["happy", "sad", "fear"])
    clip = ClipInput("c", np.zeros((2, 64, 64, 3), np.uint8), np.array([0.0, 1.0]),
                     ["the mouth opens"], [(0.0, 1.0)])
    (res,) = lab.score([clip], lab.scorer.labels)
    assert res.probs.shape == (3,) and res.probs.sum() == pytest.approx(1)


def test_clean_description_keeps_one_bounded_line():
    assert clean_description("\n  brows rise \nsecond line") == "brows rise"
    assert clean_description("") == ""
    assert len(clean_description("x" * 1000)) == 240
