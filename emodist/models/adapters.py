"""Fine-tuned weights on top of a base VLM: LoRA adapters (peft) and what emodist records
beside them.

`emodist finetune` writes an adapter folder in peft's layout (adapter_config.json,
adapter_model.safetensors) plus `emodist_adapter.json`: the base model, the label set
and mode it was trained for, how it was trained, and a hash of its weights. A run that
loads it (`labeler.adapter`, `describer.adapter`) is checked against that record before
Ray starts (`pin`), and the hash goes into the config hash, so rows labeled with other
weights are never mistaken for these. A full fine-tune (`finetune.method=full`) writes a
whole model folder with the same record; `labeler.model` points at it.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path

from emodist import storage
from emodist.config import Config, ConfigError

META = "emodist_adapter.json"
WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors")

# Where each part of a VLM sits, by module-name fragments that transformers' VLMs use
# (LLaVA, Qwen2-VL / 2.5-VL, InternVL, Idefics, ...).
PARTS = {
    "language": ("language_model",),
    "projector": ("multi_modal_projector", "merger", "mm_projector", "connector", "mlp1"),
    "vision": ("vision_tower", "visual", "vision_model"),
}


def fingerprint(folder: str | Path) -> str:
    """A hash of the weight and config files of a saved adapter or model folder."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name in WEIGHT_FILES or (name.endswith(".safetensors") and name.startswith("model-")):
            h.update(name.encode())
            with open(os.path.join(folder, name), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def write_meta(folder: str | Path, **meta) -> dict:
    """Record what the folder's weights are for, with their fingerprint."""
    meta = {**meta, "fingerprint": fingerprint(folder)}
    Path(folder, META).write_text(json.dumps(meta, indent=2))
    return meta


def read_meta(uri: str, cfg, key: str) -> dict | None:
    """The record beside an adapter or model folder (None where there is none: a folder
    not written by `emodist finetune`)."""
    fs, root = storage.filesystem(uri, cfg)
    path = posixpath.join(root, META)
    try:
        if not fs.exists(root):
            raise ConfigError(f"{key}={storage.scrub(uri)}: no such folder; point it at the adapter folder "
                              "`emodist finetune` wrote (OUT/adapter)")
        if not fs.exists(path):
            return None
        return json.loads(fs.cat_file(path))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - storage errors: one line with the fix
        raise storage.explain(exc, uri, "read the adapter") from None


def pin(cfg: Config) -> Config:
    """The config with each adapter checked against its record (base model, label set)
    and its fingerprint set, so the config hash follows the weights."""
    updates = {}
    for role in ("describer", "labeler"):
        m = getattr(cfg, role)
        if m.adapter is None:
            if role == "labeler" and "://" not in m.model and os.path.isfile(os.path.join(m.model, META)):
                _check_labels(json.loads(Path(m.model, META).read_text()), cfg, f"{role}.model={m.model}")
            continue
        key = f"{role}.adapter={storage.scrub(m.adapter)}"
        meta = read_meta(m.adapter, cfg, f"{role}.adapter")
        if meta is None:
            fs, root = storage.filesystem(m.adapter, cfg)
            if not fs.exists(posixpath.join(root, "adapter_config.json")):
                raise ConfigError(f"{key}: not an adapter folder (no adapter_config.json); point it at OUT/adapter "
                                  "of `emodist finetune`, or at a peft adapter folder")
            updates[role] = m.model_copy(update={"adapter_fingerprint": _remote_fingerprint(m.adapter, cfg)})
            continue
        if meta.get("base_model") != m.model:
            raise ConfigError(f"{key} was trained on {meta.get('base_model')!r}, not {role}.model={m.model!r}; "
                              f"set {role}.model={meta.get('base_model')} or train an adapter for this model")
        if role == "labeler":
            _check_labels(meta, cfg, key)
        # A local adapter by its absolute path: rows name it wherever the run was started.
        updates[role] = m.model_copy(update={"adapter_fingerprint": meta["fingerprint"],
                                             "adapter": storage.absolute(m.adapter)})
    return cfg.model_copy(update=updates) if updates else cfg


def _check_labels(meta: dict, cfg: Config, key: str) -> None:
    trained = tuple(meta.get("labels") or ())
    if trained and trained != cfg.label_names:
        raise ConfigError(f"{key} was trained for the labels {list(trained)}, and this run labels "
                          f"{list(cfg.label_names)}: its option letters would mean other classes; set labels to "
                          "the adapter's, or fine-tune for these labels")


def _remote_fingerprint(uri: str, cfg) -> str:
    """A foreign peft adapter (no record): the hash of its files as stored."""
    return fingerprint(local_path(uri, cfg))


def local_path(uri: str, cfg) -> str:
    """A folder peft and vLLM can open: the folder itself when local, else a copy in the
    emodist cache keyed by the URI (fetched once per machine)."""
    if storage.is_local(uri):
        return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
    from emodist.models.tiny import default_cache

    target = default_cache() / "adapters" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if not (target / "adapter_config.json").exists() and not (target / "config.json").exists():
        fs, root = storage.filesystem(uri, cfg)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        fs.get(root.rstrip("/") + "/", str(tmp), recursive=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another actor fetched it first; its copy is the same
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def attach_adapters(model, adapters: dict[str, str]):
    """The model with each named adapter (peft folder) loaded; the engine switches
    between them per request (`set_adapter`, `disable_adapter` for the base model)."""
    from peft import PeftModel

    names = sorted(adapters)
    peft_model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(adapters[name], adapter_name=name)
    return peft_model


def lora_target_modules(model, parts: list[str] | tuple[str, ...]) -> list[str]:
    """The names of the linear layers in the chosen parts of a VLM (never the LM head:
    the option letters are read from it, and it is often tied to the embeddings)."""
    import torch

    wanted = [frag for part in parts for frag in PARTS[part]]
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        pieces = name.split(".")
        if any(frag in pieces for frag in wanted):
            names.append(name)
    if not names:
        raise ConfigError(f"finetune.lora_targets={list(parts)}: no linear layers found under "
                          f"{wanted} in {type(model).__name__}; choose other targets or finetune.method=full")
    return names
