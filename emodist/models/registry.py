"""Build the describer and labeler a config asks for: the only place that knows the
backends (stages just call the protocols in base.py).

An actor calls `build_models` once. VLM roles get one engine per distinct model: when
the describer and the labeler name the same backend, model, device and dtype they share
one engine (one copy of the weights, one KV cache), whatever the backend. The engine is
built with the settings of the role whose pool the actor belongs to (the labeler's in the
shared pool); adapters (LoRA) are per role on the shared engine.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from emodist.config import Config, ModelConfig
from emodist.models.base import Describer, InThread, Labeler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineKey:
    backend: str
    model: str
    device: str
    dtype: str


def engine_key(m: ModelConfig) -> EngineKey:
    return EngineKey(m.backend, m.model, m.device, m.dtype)


def image_size(cfg: Config) -> tuple[int, int]:
    """(width, height) of the frames the models receive: decode's size, or the face crop."""
    if cfg.face.enabled:
        return cfg.face.size, cfg.face.size
    return cfg.decode.width, cfg.decode.height


class Models:
    """The engines of one actor, built on first use and shared by role."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.engines: dict[EngineKey, object] = {}
        self.constructed: list[EngineKey] = []  # in build order (tests count them)

    def engine(self, m: ModelConfig, *, images: bool):
        key = engine_key(m)
        if key not in self.engines:
            self.engines[key] = self._build(m, images=images)
            self.constructed.append(key)
        return self.engines[key]

    def _build(self, m: ModelConfig, *, images: bool):
        from emodist.models.adapters import local_path

        # s3:// adapters are fetched to the machine's cache once: peft and vLLM open folders.
        adapters = {role: local_path(getattr(self.cfg, role).adapter, self.cfg) for role in ("describer", "labeler")
                    if engine_key(getattr(self.cfg, role)) == engine_key(m) and getattr(self.cfg, role).adapter}
        if m.backend == "transformers":
            from emodist.models.hf_engine import HFEngine

            return HFEngine(m.model, m.device, m.dtype, prompts_per_forward=m.prompts_per_forward,
                            adapters=adapters)
        if m.backend == "vllm":
            from emodist.models.vllm_engine import VLLMEngine

            return VLLMEngine(m, seed=self.cfg.run.seed, images=images, image_size=image_size(self.cfg),
                              adapters=adapters)
        raise ValueError(f"backend {m.backend!r} has no engine; please report")

    def close(self) -> None:
        for e in self.engines.values():
            e.close()


def build_models(cfg: Config, roles: tuple[str, ...] = ("describer", "labeler"),
                 models: Models | None = None) -> tuple[Describer | None, Labeler | None]:
    """The describer and labeler for the roles an actor serves (None for the others).
    `models` holds the engines (pass one to share them across calls or to count them)."""
    models = models or Models(cfg)
    shared = ("describer" in roles and cfg.uses_descriptions
              and engine_key(cfg.describer) == engine_key(cfg.labeler))
    # A text-mode labeler shows no images: its own engine can skip the vision tower.
    # The labeler's engine is built first, by the labeler's settings, when both share it.
    labeler = _labeler(cfg, models, images=cfg.mode != "text" or shared) if "labeler" in roles else None
    describer = _describer(cfg, models) if "describer" in roles else None
    return describer, labeler


def _describer(cfg: Config, models: Models) -> Describer | None:
    d = cfg.describer
    if not cfg.uses_descriptions:
        return None
    if d.backend in ("transformers", "vllm"):
        from emodist.models.vlm import VLMDescriber

        return VLMDescriber(d, models.engine(d, images=True), adapter="describer" if d.adapter else None)
    if d.backend == "specialist":
        from emodist.models.specialist import TrajectoryDescriber

        # Frames arrive cropped when the face stage ran; otherwise the specialist crops.
        return InThread(TrajectoryDescriber(face_crop=not cfg.face.enabled, device=_device(d.device, "describer")))
    raise ValueError(f"describer.backend={d.backend!r} is not supported")


def _labeler(cfg: Config, models: Models, *, images: bool) -> Labeler:
    lab = cfg.labeler
    if lab.backend in ("transformers", "vllm"):
        from emodist.models.vlm import VLMLabeler

        engine = models.engine(lab, images=images)
        return VLMLabeler(lab, cfg.mode, cfg.label_names, engine, cfg.run.seed,
                          adapter="labeler" if lab.adapter else None)
    if lab.backend == "specialist":
        from emodist.models.specialist import AggregateLabeler

        return InThread(AggregateLabeler(aggregate=lab.aggregate, face_crop=not cfg.face.enabled,
                                         device=_device(lab.device, "labeler")))
    raise ValueError(f"labeler.backend={lab.backend!r} cannot label; use transformers, vllm or specialist")


def _device(device: str, key: str) -> str:
    from emodist.devices import auto_device, require_cuda

    if device.startswith("cuda"):
        require_cuda(f"{key}.device")
    return auto_device() if device == "auto" else device
