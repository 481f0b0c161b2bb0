"""The transformers engine, loaded from a local folder through the Auto classes, and the
VLM describer and labeler over it."""
import asyncio
import time

import numpy as np
import pytest

from emodist.config import LabelerConfig
from emodist.models import prompts
from emodist.models.base import ClipInput
from emodist.models.engine import Prompt, run_sync
from emodist.models.hf_engine import HFEngine
from emodist.models.scoring import PermutationScorer, letter_token_ids
from emodist.models.vlm import VLMLabeler, clean_description


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    eng = HFEngine(str(tiny_vlm), prompts_per_forward=4)
    yield eng
    eng.close()


def test_tiny_model_loads_from_its_folder_like_a_real_one(engine):
    assert type(engine.model).__name__ == "LlavaForConditionalGeneration"
    frames = [np.full((224, 224, 3), v, np.uint8) for v in (0, 128)]
    parts = prompts.describe_prompt(2, 0.0, 1.0)
    texts = run_sync(engine.generate([Prompt(parts, frames)], max_new_tokens=5))
    assert len(texts) == 1 and isinstance(texts[0], str)
    vocab = list(range(len(engine.tokenizer)))
    lp = run_sync(engine.token_logprobs([Prompt(parts, frames), Prompt(parts, frames[::-1])], vocab))
    assert lp.shape == (2, len(vocab)) and np.allclose(np.exp(lp).sum(axis=1), 1, atol=1e-4)


def test_chunks_follow_prompts_per_forward_and_give_the_numbers_of_one_big_forward(engine, tiny_vlm):
    """10 prompts in chunks of 4 (3 forwards) score as one forward of 10 does."""
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(10)]
    reqs = [Prompt(prompts.describe_prompt(1, 0.0, 1.0), [f]) for f in frames]
    ids = [3, 7, 11]
    chunked = run_sync(engine.token_logprobs(reqs, ids))
    whole = HFEngine(str(tiny_vlm), prompts_per_forward=16)
    try:
        np.testing.assert_allclose(chunked, run_sync(whole.token_logprobs(reqs, ids)), atol=1e-5)
    finally:
        whole.close()
    assert chunked.shape == (10, 3) and np.ptp(chunked[:, 0]) > 0  # input-dependent


def test_the_processor_prepares_the_next_chunk_while_the_model_runs(engine):
    """While the model thread is inside a forward, the processor thread is already
    working on the next chunk: the two overlap."""
    events: list[tuple[str, str, float]] = []
    prep, run = engine._inputs, engine._logprobs

    def slow_inputs(ps):
        events.append(("prep", "start", time.perf_counter()))
        out = prep(ps)
        events.append(("prep", "end", time.perf_counter()))
        return out

    def slow_model(inputs, ids):
        events.append(("model", "start", time.perf_counter()))
        time.sleep(0.2)  # a forward that takes a while
        out = run(inputs, ids)
        events.append(("model", "end", time.perf_counter()))
        return out

    engine._inputs, engine._logprobs = slow_inputs, slow_model
    try:
        reqs = [Prompt(prompts.describe_prompt(1, 0.0, 1.0), [np.zeros((32, 32, 3), np.uint8)])] * 12
        run_sync(engine.token_logprobs(reqs, [1]))  # 3 chunks of 4
    finally:
        engine._inputs, engine._logprobs = prep, run
    model_spans = [(a[2], b[2]) for a, b in zip([e for e in events if e[:2] == ("model", "start")],
                                                [e for e in events if e[:2] == ("model", "end")])]
    prep_starts = [e[2] for e in events if e[:2] == ("prep", "start")]
    assert len(model_spans) == 3 and len(prep_starts) == 3
    # The second chunk's preparation starts before the first forward ends.
    assert prep_starts[1] < model_spans[0][1]


def test_concurrent_callers_each_get_their_own_results(engine):
    """Calls from many coroutines at once (clips in flight) never mix results."""
    frames = [np.full((32, 32, 3), v, np.uint8) for v in range(0, 250, 25)]
    reqs = [Prompt(prompts.describe_prompt(1, 0.0, 1.0), [f]) for f in frames]
    alone = [run_sync(engine.token_logprobs([r], [2, 5])) for r in reqs]

    async def together():
        return await asyncio.gather(*(engine.token_logprobs([r], [2, 5]) for r in reqs))

    for a, b in zip(alone, run_sync(together())):
        np.testing.assert_allclose(a, b, atol=1e-6)


def counted_forwards(engine, monkeypatch) -> list[int]:
    """The number of prompts of each forward the engine runs from now on."""
    sizes: list[int] = []
    for name in ("_logprobs", "_generate"):
        real = getattr(engine, name)

        def counted(inputs, arg, real=real):
            sizes.append(int(inputs["input_ids"].shape[0]))
            return real(inputs, arg)

        monkeypatch.setattr(engine, name, counted)
    return sizes


def test_small_requests_waiting_at_once_share_a_forward_with_the_numbers_of_each_alone(engine, monkeypatch):
    """Clips send one or two prompts each; those waiting together are joined into forwards
    of up to prompts_per_forward (4 here) prompts, and each caller gets what its own
    prompts give alone: scores and greedy text."""
    frames = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(8)]
    reqs = [Prompt(prompts.describe_prompt(1, 0.0, 1.0), [f]) for f in frames]
    alone = [run_sync(engine.token_logprobs([r], [2, 5, 9])) for r in reqs]
    texts = [run_sync(engine.generate([r], 4)) for r in reqs]
    sizes = counted_forwards(engine, monkeypatch)

    async def together():
        return await asyncio.gather(*(engine.token_logprobs([r], [2, 5, 9]) for r in reqs),
                                    *(engine.generate([r], 4) for r in reqs))

    got = run_sync(together())
    for a, b in zip(alone, got[:8]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert got[8:] == texts
    # 16 requests of one prompt: forwards of at most 4, far fewer than 16.
    assert sum(sizes) == 16 and max(sizes) == 4 and len(sizes) <= 8, sizes


def test_a_bad_request_joined_with_good_ones_fails_alone(engine, monkeypatch):
    """A request the processor cannot prepare (two image placeholders, one image) sent
    with good ones: only its caller gets the error; the others their numbers."""
    good = [Prompt(prompts.describe_prompt(1, 0.0, 1.0), [np.full((32, 32, 3), v, np.uint8)]) for v in (10, 90, 170)]
    bad = Prompt(prompts.describe_prompt(2, 0.0, 1.0), [np.zeros((32, 32, 3), np.uint8)])
    alone = [run_sync(engine.token_logprobs([r], [2, 5])) for r in good]
    sizes = counted_forwards(engine, monkeypatch)
    prepared: list[int] = []
    real_inputs = engine._inputs

    def inputs(ps):
        prepared.append(len(ps))
        return real_inputs(ps)

    monkeypatch.setattr(engine, "_inputs", inputs)

    async def together():
        return await asyncio.gather(*(engine.token_logprobs([r], [2, 5]) for r in [good[0], bad, *good[1:]]),
                                    return_exceptions=True)

    first, err, *rest = run_sync(together())
    assert isinstance(err, Exception) and not isinstance(first, Exception), (first, err)
    for a, b in zip(alone, [first, *rest]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert max(prepared) > 1, prepared  # the bad one was joined with others, and then
    assert sum(sizes) == 3, sizes  # never reached the model


def test_an_error_reaches_its_caller_and_the_engine_keeps_serving(engine):
    bad = Prompt(prompts.describe_prompt(2, 0.0, 1.0), [np.zeros((32, 32, 3), np.uint8)])  # 2 placeholders, 1 image
    with pytest.raises(Exception):
        run_sync(engine.generate([bad], 2))
    ok = Prompt(prompts.describe_prompt(1, 0.0, 1.0), [np.zeros((32, 32, 3), np.uint8)])
    assert isinstance(run_sync(engine.generate([ok], 2))[0], str)
    assert all(t.is_alive() for t in engine._threads)


def test_letter_tokens_are_single_and_distinct(engine):
    ids = letter_token_ids(engine.tokenizer, 11)
    flat = [i for g in ids for i in g]
    assert len(ids) == 11 and len(flat) == len(set(flat))
    for letter, group in zip("ABCDEFGHIJK", ids):
        assert all(engine.tokenizer.decode([i]).strip() == letter for i in group)


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
def test_labeler_scores_every_mode(engine, tiny_vlm, mode):
    lab = VLMLabeler(LabelerConfig(model=str(tiny_vlm), permutations=2), mode, ["happy", "sad", "fear"], engine)
    clip = ClipInput("c", np.zeros((2, 64, 64, 3), np.uint8), np.array([0.0, 1.0]),
                     ["the mouth opens"], [(0.0, 1.0)])
    (res,) = run_sync(lab.score([clip], lab.scorer.labels))
    assert res.probs.shape == (3,) and res.probs.sum() == pytest.approx(1)


def test_clean_description_keeps_one_bounded_line():
    assert clean_description("\n  brows rise \nsecond line") == "brows rise"
    assert clean_description("") == ""
    assert len(clean_description("x" * 1000)) == 240


def test_close_stops_the_threads(tiny_vlm):
    eng = HFEngine(str(tiny_vlm))
    eng.close()
    assert not any(t.is_alive() for t in eng._threads)
