"""The model settings, checked in the driver before Ray starts, in seconds: a wrong model
id or folder, a backend that is not installed, missing weights of the specialists. One
line each, naming the key and the fix (the config itself checks devices, priors and
prompt placeholders when it loads). `run.check_models=false` skips this for clusters whose
driver cannot see what the workers will load.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

from emodist.config import Config, ConfigError, ModelConfig

BUILTIN = {"builtin:tiny-vlm": None, "builtin:tiny-qwen2.5-vl": "qwen_tiktoken"}  # name -> asset it needs
HUB_TIMEOUT_S = 10


def check(cfg: Config) -> None:
    if not cfg.run.check_models:
        return
    roles = (["describer"] if cfg.uses_descriptions else []) + ["labeler"]
    for role in roles:
        m: ModelConfig = getattr(cfg, role)
        if m.backend in ("transformers", "vllm"):
            _check_vlm(m, role)
        elif m.backend == "specialist":
            _check_assets(role)
        if m.backend == "vllm":
            check_vllm(m, role)


def check_vllm(m: ModelConfig, role: str, import_torchvision: Callable[[], None] | None = None) -> None:
    """What vLLM needs to run the role's model, known before any actor starts: vLLM
    itself, and for vision models a torchvision that loads (vLLM's Qwen2-VL-family and
    other vision processors import it; on CPU machines PyPI's CUDA build of it loads only
    in the venv scripts/setup_vllm.sh makes)."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{role}.backend=vllm but vllm is not installed; pip install 'emodist[vllm]' on GPU "
                          f"machines (bash scripts/setup_vllm.sh on CPU machines), or set {role}.backend=transformers")
    if not _is_vision_model(m.model):
        return
    try:
        (import_torchvision or _import_torchvision)()
    except Exception as exc:  # noqa: BLE001 - ImportError, or a build whose compiled ops do not load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"{role}.backend=vllm with {role}.model={m.model}: vLLM needs torchvision for vision models and it does "
            f"not load here ({type(exc).__name__}: {first[:160]}); on CPU machines use the venv bash "
            "scripts/setup_vllm.sh makes, on GPU machines install the torchvision release that matches torch, "
            f"or set {role}.backend=transformers") from None


def _import_torchvision() -> None:
    import torchvision  # noqa: F401


def _is_vision_model(model: str) -> bool:
    """True unless the model is a local folder without an image processor (a text-only
    model); hub ids are taken as VLMs, which is what emodist labels with."""
    if model.startswith("builtin:") or "://" in model:
        return True
    path = os.path.expanduser(model)
    if not os.path.isdir(path):
        return True
    return any(os.path.exists(os.path.join(path, f)) for f in ("preprocessor_config.json", "processor_config.json"))


def random_weights(cfg: Config) -> list[str]:
    """One warning per role whose model is a built-in with random weights: said on every
    run, since its labels look like labels and mean nothing."""
    models: dict[str, str] = {}  # model -> the role named for it (the labeler's first)
    for role in ["labeler"] + (["describer"] if cfg.uses_descriptions else []):
        m = getattr(cfg, role)
        if m.backend in ("transformers", "vllm") and m.model in BUILTIN:
            models.setdefault(m.model, role)
    return [f"{role}.model={model} has random weights: its {'labels' if role == 'labeler' else 'descriptions'} "
            "mean nothing (it exercises the machinery); for real labels offline leave describer and labeler at "
            "their defaults (face detector + expression CNN), or set labeler.model to a VLM"
            for model, role in models.items()]


def _check_assets(role: str) -> None:
    from emodist import assets

    for name in ("face_expression_model", "face_expression_manifest", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"):
        try:
            assets.path(name)
        except assets.AssetMissing as exc:
            raise ConfigError(f"{role}.backend=specialist needs its weights: {exc}") from None


def _check_vlm(m: ModelConfig, role: str) -> None:
    model = m.model
    key = f"{role}.model"
    if model.startswith("builtin:"):
        if model not in BUILTIN:
            raise ConfigError(f"{key}={model!r} is not a built-in model; built-ins: {', '.join(BUILTIN)}")
        if BUILTIN[model]:
            from emodist import assets

            try:
                assets.path(BUILTIN[model])
            except assets.AssetMissing as exc:
                raise ConfigError(f"{key}={model} needs {exc}") from None
        return
    if "://" in model or model.startswith(("/", ".", "~")) or os.path.exists(model):
        path = os.path.expanduser(model)
        if "://" not in model and not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"{key}={model!r}: no model folder there (no config.json); point it at a folder "
                              "saved with save_pretrained, or at a hub id such as Qwen/Qwen2.5-VL-7B-Instruct")
        if "://" not in model:
            _check_folder_files(path, key)
        return
    _check_hub(model, key)


# What both VLM backends load from a model folder besides config.json: weights, and a
# tokenizer (the chat template and option letters come from it).
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_folder_files(path: str, key: str) -> None:
    import glob

    if not any(glob.glob(os.path.join(glob.escape(path), g)) for g in WEIGHT_GLOBS):
        raise ConfigError(f"{key}={path!r}: the folder has a config.json but no weights (*.safetensors or "
                          "pytorch_model*.bin); copy the model's weight files there, or point the key at a complete "
                          "model folder")
    if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}={path!r}: the folder has no tokenizer ({', '.join(TOKENIZER_FILES)}); save the "
                          "model's processor or tokenizer there too (processor.save_pretrained)")


def _check_hub(model: str, key: str) -> None:
    """A hub id: in the local cache, or known to the hub."""
    try:
        from huggingface_hub import model_info, try_to_load_from_cache
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:  # no hub client: transformers will say
        return
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE"):
        raise ConfigError(f"{key}={model!r} is not in the local model cache and HF_HUB_OFFLINE is set; download it "
                          "first (huggingface-cli download), or point the key at a local folder")
    try:
        model_info(model, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ConfigError(f"{key}={model!r}: no such model on the Hugging Face hub (or it is private: "
                          "set HF_TOKEN); check the id, or point the key at a local folder") from None
    except Exception as exc:  # noqa: BLE001 - network and other hub errors
        raise ConfigError(
            f"{key}={model!r} is not in the local model cache and the Hugging Face hub cannot be reached "
            f"({type(exc).__name__}); download the model first, point the key at a local folder, or set "
            "run.check_models=false if the workers can load it though this driver cannot") from None


# --- settings a backend cannot run, checked whatever run.check_models says -------------

# What the specialist backend reads of a role's settings (besides resources): device, and
# the labeler's aggregate. These others it would ignore: a run that sets one is refused
# rather than labeled by something the user did not ask for.
SPECIALIST = "face-api-expression"
SPECIALIST_IGNORES = ("adapter", "prompt", "dtype", "max_new_tokens", "answer_tokens", "permutations")


def check_settings(cfg: Config) -> None:
    """ConfigError, in one line naming the key, its value and the fix, for settings no
    backend would run as given: a labeler with backend none, and model settings the
    specialist backend would silently ignore."""
    if cfg.labeler.backend == "none":
        raise ConfigError("labeler.backend=none: every run needs a labeler (backend none is for the describer, "
                          "to skip descriptions); set labeler.backend to specialist (the default), transformers "
                          "or vllm")
    if cfg.mode == "text" and cfg.describer.backend == "none":
        raise ConfigError("mode=text labels from the motion descriptions alone, but describer.backend=none "
                          "writes none: every clip would be labeled from an empty prompt; set describer.backend "
                          "(specialist, transformers or vllm), or use mode=msce or sparse")
    roles = (["describer"] if cfg.uses_descriptions else []) + ["labeler"]
    for role in roles:
        m: ModelConfig = getattr(cfg, role)
        if m.backend != "specialist":
            continue
        if m.model != SPECIALIST:
            raise ConfigError(
                f"{role}.model={m.model!r} is not run by {role}.backend=specialist (it runs face-api's expression "
                f"CNN, model {SPECIALIST}); to run this model set {role}.backend=transformers (or vllm), or leave "
                f"{role}.model at {SPECIALIST}")
        for key in SPECIALIST_IGNORES:
            default = type(m).model_fields[key].default if key in type(m).model_fields else None
            if key in type(m).model_fields and getattr(m, key) != default:
                raise ConfigError(
                    f"{role}.{key}={getattr(m, key)!r} has no effect with {role}.backend=specialist (face-api's "
                    f"expression CNN); remove it, or set {role}.backend=transformers (or vllm) with a VLM in "
                    f"{role}.model")


def local_gpus() -> int:
    """GPUs this process's torch can use: what a local Ray's actors (same environment) get.
    A CPU build of torch counts none, whatever the machine has."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_devices(cfg: Config, count_gpus: Callable[[], float] = local_gpus, where: str = "this machine") -> None:
    """ConfigError for a model stage set to a CUDA device where there is no GPU (counted by
    `count_gpus`, only when some stage asks for CUDA: importing torch takes a second).
    Called before a local Ray starts; its actors would fail at their first batch. (A
    cluster's GPUs may join later: placement checks what its stages reserve.)"""
    roles = (["describer"] if cfg.uses_descriptions else []) + ["labeler"]
    cuda = [(role, getattr(cfg, role).device) for role in roles if getattr(cfg, role).device.startswith("cuda")]
    if cuda and count_gpus() == 0:
        role, device = cuda[0]
        raise ConfigError(f"{role}.device={device} but {where} has no GPU usable by torch; set {role}.device=cpu "
                          "or auto, or run on a machine (or a cluster: run.ray_address) with GPUs")
