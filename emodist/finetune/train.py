"""What each Ray Train worker runs: the labeler's VLM (with a LoRA adapter, or every
weight) trained on the labeler's own prompts, one epoch dataset after another.

The loss is the labeler's scoring made differentiable: the prompt `emodist run` sends
(keyframes, descriptions, lettered options), the next-token log-probabilities at the
answer position, each option letter summed over its spellings, renormalised over the
options (`scoring.PermutationScorer`), and cross-entropy on the true label's letter.
With `finetune.permute_options` every example shows the options in a new order, so the
adapter learns the classes, not their positions.

Memory: a step's batch (finetune.batch_size) runs in micro-batches whose gradients
accumulate (finetune.micro_batch_size), with gradient checkpointing, and in bfloat16
where the device has it (finetune.dtype); benchmarks/finetune_memory.py models what a
7B VLM needs at these settings.

Each epoch ends with a checkpoint (weights, optimizer, epoch and step) and a line in
OUT/metrics.jsonl; a restarted run (the same command again, or Ray Train's restart after
a lost node: restarts.py) continues from the last checkpoint.
"""
from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time

import numpy as np

from emodist import storage, testing
from emodist.config import Config
from emodist.finetune import examples as ex
from emodist.finetune import restarts

STATE = "state.json"
OPTIMIZER = "optimizer.pt"
WEIGHTS = "weights"  # the adapter folder (peft layout) or the whole model's folder


def dataset_name(epoch: int) -> str:
    return f"epoch_{epoch}"


def compute_dtype(cfg: Config, device: str):
    """finetune.dtype for `device`: auto is bfloat16 where the device computes in it."""
    import torch

    want = cfg.finetune.dtype
    if want == "auto":
        bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, want)


def _checkpointing(model, cfg: Config, lora: bool) -> None:
    """Gradient checkpointing (non-reentrant: no input needs a gradient for it to work,
    and it composes with DDP's no_sync); with LoRA the embeddings' output also requires
    gradients, as peft asks for checkpointed adapters."""
    if not cfg.finetune.gradient_checkpointing:
        return
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x's name for it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.use_cache = False  # a KV cache is of no use in training and conflicts with recomputation
    if lora:
        model.enable_input_require_grads()


def load_model(cfg: Config, device: str, weights: str | None = None):
    """(model, processor) ready to train: the base model with a new LoRA adapter, or the
    adapter (or whole model) of a checkpoint's `weights` folder."""
    import torch
    from transformers import AutoModelForImageTextToText

    from emodist.models.adapters import lora_target_modules
    from emodist.models.hf_engine import load_processor, resolve_model

    ft = cfg.finetune
    base = resolve_model(cfg.labeler.model)
    processor = load_processor(base)
    getattr(processor, "tokenizer", processor).padding_side = "left"  # the last position is the answer's
    if ft.method == "full":  # float32 weights and optimizer states; bf16 only in the forward (autocast)
        model = AutoModelForImageTextToText.from_pretrained(weights or base, dtype=torch.float32)
        _checkpointing(model, cfg, lora=False)
        return model.to(device).train(), processor
    from peft import LoraConfig, PeftModel, get_peft_model

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=compute_dtype(cfg, device))
    _checkpointing(model, cfg, lora=True)
    if weights:
        model = PeftModel.from_pretrained(model, weights, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(
            r=ft.lora_rank, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout,
            target_modules=lora_target_modules(model, ft.lora_targets)))
    return model.to(device).train(), processor


def option_loss(model, processor, letter_ids: list[list[int]], clips, orders: list[np.ndarray],
                targets: np.ndarray, cfg: Config, device: str):
    """(mean cross-entropy, correct count) of one batch: `orders[i]` is the label order
    shown to clip i, `targets[i]` its class index."""
    import torch

    from emodist.models import prompts
    from emodist.models.engine import Prompt
    from emodist.models.hf_engine import chat_inputs

    names = cfg.label_names
    reqs = []
    for clip, order in zip(clips, orders, strict=True):
        # The labeler's own prompt builder: the same parts and images as at inference
        # (keyframes without a face said so, not shown).
        (parts,), (images,) = prompts.label_requests([clip], lambda _, o=order: [[names[j] for j in o]],
                                                     cfg.mode, cfg.labeler.prompt)
        reqs.append(Prompt(parts, images))
    inputs = chat_inputs(processor, reqs, device)
    autocast = cfg.finetune.method == "full" and compute_dtype(cfg, device) == torch.bfloat16
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
    logp = torch.log_softmax(logits, dim=-1)
    letters = torch.stack([torch.logsumexp(logp[:, ids], dim=1) for ids in letter_ids], dim=1)
    # The letter of the true class in the order shown.
    shown = torch.tensor([int(np.flatnonzero(o == t)[0]) for o, t in zip(orders, targets)], device=letters.device)
    loss = torch.nn.functional.cross_entropy(letters, shown)
    correct = int((letters.argmax(dim=1) == shown).sum())
    return loss, correct


def accumulate(model, processor, letter_ids: list[list[int]], clips, orders: list[np.ndarray],
               targets: np.ndarray, cfg: Config, device: str, synced: bool = False) -> tuple[float, int]:
    """Forward and backward one batch in micro-batches of finetune.micro_batch_size,
    gradients accumulated as the batch's mean (each micro-batch's mean loss weighted by
    its share of the batch): the same gradients as one pass over the whole batch. With
    `synced` (DDP), gradients are all-reduced once, after the last micro-batch.
    Returns (mean loss, correct count); the caller steps the optimizer."""
    from contextlib import nullcontext

    n = len(clips)
    micro = cfg.finetune.micro_batch_size or n
    loss_sum, correct = 0.0, 0
    for start in range(0, n, micro):
        part = slice(start, min(n, start + micro))
        last = part.stop == n
        with model.no_sync() if synced and not last else nullcontext():
            loss, right = option_loss(model, processor, letter_ids, clips[part], orders[part], targets[part],
                                      cfg, device)
            share = (part.stop - part.start) / n
            (loss * share).backward()
        loss_sum += float(loss.detach()) * share
        correct += right
    return loss_sum, correct


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _save(model, processor, optimizer, state: dict, folder: str, cfg: Config) -> None:
    import torch

    weights = os.path.join(folder, WEIGHTS)
    _unwrap(model).save_pretrained(weights)
    if cfg.finetune.method == "full":
        processor.save_pretrained(weights)
    torch.save(optimizer.state_dict(), os.path.join(folder, OPTIMIZER))
    with open(os.path.join(folder, STATE), "w") as f:
        json.dump(state, f)


def write_metrics(output_uri: str, cfg: Config, line: dict) -> None:
    """OUT/metrics.jsonl with this epoch's line: earlier epochs kept, any line of this
    epoch or later (an epoch a kill cut short, then run again) replaced."""
    fs, root = storage.filesystem(output_uri, cfg)
    path = posixpath.join(root, "metrics.jsonl")
    lines = []
    if fs.exists(path):
        lines = [json.loads(s) for s in fs.cat_file(path).decode().splitlines() if s.strip()]
    lines = [m for m in lines if m["epoch"] < line["epoch"]] + [line]
    tmp = path + ".tmp"
    fs.pipe_file(tmp, "".join(json.dumps(m) + "\n" for m in lines).encode())
    fs.mv(tmp, path)


def train_loop(config: dict) -> None:
    """Ray Train's train_loop_per_worker."""
    import ray.train
    import ray.train.torch
    import torch

    from emodist import sampling
    from emodist.models.scoring import PermutationScorer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Writing model shards" bar per checkpoint, in this worker only
    cfg = Config.model_validate(config["cfg"])
    ft, names = cfg.finetune, cfg.label_names
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = str(ray.train.torch.get_device())
    torch.manual_seed(cfg.run.seed)
    start, step = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, STATE)) as f:
                state = json.load(f)
            start, step = state["epoch"] + 1, state["step"]
            model, processor = load_model(cfg, device, os.path.join(d, WEIGHTS))
            optim_state = torch.load(os.path.join(d, OPTIMIZER), map_location=device)
    else:
        model, processor = load_model(cfg, device)
        optim_state = None
    if rank == 0:  # a start after the first in one fit is a restart by Ray Train (restarts.Watch says it)
        restarts.record_start(config["output"], cfg, start, step)
    tokenizer = getattr(processor, "tokenizer", processor)
    letter_ids = PermutationScorer(tokenizer, names).letter_ids
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    model = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    for epoch in range(start, ft.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.run.seed, epoch, rank])
        shard = ray.train.get_dataset_shard(dataset_name(epoch))
        seen = correct = 0
        loss_sum = 0.0
        for batch in shard.iter_batches(batch_size=ft.batch_size, batch_format="pandas", drop_last=world > 1,
                                        local_shuffle_buffer_size=max(ft.batch_size, 256),
                                        local_shuffle_seed=int(rng.integers(2**31))):
            rows = batch.to_dict("records")
            clips = [ex.clip_input(r) for r in rows]
            targets = np.array([r[ex.CLASS] for r in rows])
            orders = [rng.permutation(len(names)) if ft.permute_options else np.arange(len(names)) for _ in rows]
            optimizer.zero_grad()
            loss, right = accumulate(model, processor, letter_ids, clips, orders, targets, cfg, device,
                                     synced=world > 1)
            optimizer.step()
            step += 1
            testing.fault("train", "exit", step)  # tests: a training worker that dies (EMODIST_FAULTS only)
            seen += len(rows)
            correct += right
            loss_sum += loss * len(rows)
        kind, progress = sampling.epoch_strategy(ft.strategy, epoch, ft.epochs, ft.decoupled_instance_epochs)
        metrics = {"epoch": epoch, "step": step, "strategy": kind, "progress": progress,
                   "examples": config["draws"][epoch]["examples"], "examples_this_worker": seen,
                   "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                   "class_shares": config["draws"][epoch]["class_shares"],
                   "seconds": round(time.perf_counter() - t0, 3), "workers": world,
                   "resumed_from_epoch": start - 1 if start and epoch == start else None}
        with tempfile.TemporaryDirectory() as d:
            report = None
            if rank == 0:
                _save(model, processor, optimizer, {"epoch": epoch, "step": step}, d, cfg)
                report = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=report)
        if rank == 0:
            # report() returns once the checkpoint is uploaded, before Ray Train's controller has
            # registered it: a node lost in between would restart from the checkpoint before. Wait
            # for it, so that a line in metrics.jsonl is an epoch a restart resumes from.
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
            write_metrics(config["output"], cfg, metrics)
