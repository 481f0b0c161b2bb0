"""Fine-tuning's memory settings (emodist/finetune/train.py) change memory, not the
update: gradient checkpointing and micro-batches with gradient accumulation give the
loss and gradients of one plain pass over the batch (tiny VLM, CPU, float32; tolerance
rtol 1e-4 / atol 1e-6, for the different summation order)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emodist.config import load_config
from emodist.finetune import train
from emodist.models.base import ClipInput
from emodist.models.scoring import PermutationScorer

TINY = ["labeler.backend=transformers", "labeler.model=builtin:tiny-vlm", "mode=msce", "finetune.lora_dropout=0"]


def _clips(n: int) -> list[ClipInput]:
    # Prompts of one length (the same descriptions, the same label names in other orders):
    # the tiny LLaVA's positions ignore left padding, so padded prompts would score
    # differently alone than in a batch, whatever the accumulation does.
    rng = np.random.default_rng(0)
    return [ClipInput(f"c{i}", rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8), np.array([0.0, 1.0]),
                      ["lips move upwards into a brief smile"], [(0.0, 1.0)]) for i in range(n)]


def _grads(cfg, state=None):
    model, processor = train.load_model(cfg, "cpu")
    if state is not None:
        model.load_state_dict(state)
    calls = []
    layer = next(m for name, m in model.named_modules() if "language_model" in name and name.endswith("layers.0"))
    # A pre-hook inside the checkpointed forward runs again on recompute (which stops as
    # soon as the saved tensors are back: a post-hook at the layer's end would not).
    layer.mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    letter_ids = PermutationScorer(getattr(processor, "tokenizer", processor), cfg.label_names).letter_ids
    rng = np.random.default_rng(1)
    orders = [rng.permutation(len(cfg.label_names)) for _ in range(4)]
    targets = np.array([0, 3, 5, 1])
    model.zero_grad()
    loss, correct = train.accumulate(model, processor, letter_ids, _clips(4), orders, targets, cfg, "cpu")
    # (LLaVA reads the vision tower's next-to-last layer: the last one gets no gradient)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss, correct, grads, {k: v.clone() for k, v in model.state_dict().items()}, len(calls)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_checkpointing_and_accumulation_give_the_plain_gradients(method, tiny_vlm):
    plain = load_config(None, [*TINY, f"finetune.method={method}", "finetune.gradient_checkpointing=false"])
    lean = load_config(None, [*TINY, f"finetune.method={method}", "finetune.gradient_checkpointing=true",
                              "finetune.micro_batch_size=3"])  # 4 examples: micro-batches of 3 and 1
    torch.manual_seed(0)
    loss_a, right_a, grads_a, state, calls_a = _grads(plain)
    loss_b, right_b, grads_b, _, calls_b = _grads(lean, state)
    assert calls_a == 1  # one forward of the batch
    assert calls_b == 4  # two micro-batches, each layer run again in the backward pass: checkpointing is on
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and right_a == right_b
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    assert any(float(g.abs().max()) > 0 for g in grads_a.values())
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_only_where_the_device_has_it():
    cfg = load_config(None, TINY)
    assert train.compute_dtype(cfg, "cpu") == torch.float32
    if not torch.cuda.is_available():
        assert train.compute_dtype(cfg, "cuda") == torch.float32  # asked for, not there
    assert train.compute_dtype(load_config(None, [*TINY, "finetune.dtype=bfloat16"]), "cpu") == torch.bfloat16
