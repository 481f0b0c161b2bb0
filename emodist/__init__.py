"""emodist: emotion labels for large video collections with VLMs, on Ray.

    from emodist import load_config, run
    summary = run(load_config("configs/demo.yaml"), "clips/manifest.csv", "out/")

Names resolve lazily, so `import emodist` loads no Ray, torch or PyAV.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Config": "emodist.config", "load_config": "emodist.config", "ConfigError": "emodist.config",
    "run": "emodist.pipeline", "RunSummary": "emodist.pipeline",
    "evaluate": "emodist.evaluate", "sample_manifest": "emodist.sampling",
    "synthesize": "emodist.synth", "DFEW": "emodist.labels", "MAFW": "emodist.labels",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'emodist' has no attribute {name!r}")
