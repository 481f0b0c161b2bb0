"""Build the describer and labeler a config asks for (the only place that knows the
backends; stages just call the protocols)."""
from __future__ import annotations

from emodist.config import Config
from emodist.models.base import Describer, Labeler


def build_models(cfg: Config) -> tuple[Describer | None, Labeler]:
    """Both models for one actor; one loaded VLM serves both when they are the same."""
    if cfg.uses_descriptions and cfg.labeler.backend == "transformers" and cfg.shares_model:
        from emodist.models.hf import HFVLM, HFDescriber, HFLabeler

        lab = cfg.labeler
        vlm = HFVLM(lab.model, lab.device, lab.dtype)
        return HFDescriber(cfg.describer, vlm=vlm), HFLabeler(lab, cfg.mode, cfg.label_names, cfg.run.seed, vlm=vlm)
    return build_describer(cfg), build_labeler(cfg)


def build_describer(cfg: Config) -> Describer | None:
    d = cfg.describer
    if not cfg.uses_descriptions:
        return None
    if d.backend == "transformers":
        from emodist.models.hf import HFDescriber

        return HFDescriber(d)
    if d.backend == "specialist":
        from emodist.models.specialist import TrajectoryDescriber

        # Frames arrive cropped when the face stage ran; otherwise the specialist crops.
        return TrajectoryDescriber(face_crop=not cfg.face.enabled, device=_device(d.device))
    if d.backend == "vllm":
        from emodist.models.vllm_backend import VLLMDescriber

        return VLLMDescriber(d)
    raise ValueError(f"describer.backend={d.backend!r} is not supported")


def build_labeler(cfg: Config) -> Labeler:
    lab = cfg.labeler
    if lab.backend == "transformers":
        from emodist.models.hf import HFLabeler

        return HFLabeler(lab, cfg.mode, cfg.label_names, cfg.run.seed)
    if lab.backend == "specialist":
        from emodist.models.specialist import AggregateLabeler

        return AggregateLabeler(aggregate=lab.aggregate, face_crop=not cfg.face.enabled, device=_device(lab.device))
    if lab.backend == "vllm":
        from emodist.models.vllm_backend import VLLMLabeler

        return VLLMLabeler(lab, cfg.mode, cfg.label_names, cfg.run.seed)
    raise ValueError(f"labeler.backend={lab.backend!r} cannot label; use transformers, vllm or specialist")


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
