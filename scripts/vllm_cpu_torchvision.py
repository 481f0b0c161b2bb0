"""Lets PyPI's torchvision import against the CPU torch, in .venv-vllm only.

Installed by scripts/setup_vllm.sh as `_emodist_torchvision_cpu` (a module plus a .pth
file that imports it at start-up). Why: PyPI's torchvision wheels are CUDA builds whose
compiled ops (`_C.so`) link libtorch_cuda.so, which the CPU torch does not have, so the
library never loads and `import torchvision` dies in `_meta_registrations.py` on
`register_fake("torchvision::nms")` ("operator torchvision::nms does not exist"). That
module registers fakes for exactly two ops unconditionally (nms, qnms; every other
registration checks `_has_ops()` first). vLLM's Qwen2-VL-family processors and models
use torchvision's pure-Python transforms only, never these ops, so defining the two
schemas before torchvision imports is enough for vLLM's own multimodal code to run on
CPU. Calling either op raises a clear error instead of computing anything.

torchvision cannot be built from source here instead: no torchvision source release is
on PyPI (only wheels), and this project's machines reach no other source host.

The hook costs nothing until something imports torchvision: it is a finder that steps
in once, defines the schemas, then removes itself. Where torchvision's compiled ops do
load (a matching build), the hook leaves everything alone.
"""
from __future__ import annotations

import importlib.abc
import sys

SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
WHY = ("torchvision::{op} is not available in this venv: PyPI's torchvision is a CUDA build whose "
       "compiled ops do not load against the CPU torch (scripts/vllm_cpu_torchvision.py)")


def compiled_ops_load() -> bool:
    """True when torchvision's own _C library loads (then nothing needs defining)."""
    import importlib.util
    from pathlib import Path

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = next(iter(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so")), None)
    if lib is None:
        return False
    try:
        torch.ops.load_library(str(lib))
    except (OSError, RuntimeError):
        return False
    return True


def define_missing_ops() -> list[str]:
    """Define the schemas torchvision's import needs, each with a CPU kernel that says
    why it cannot run; returns the ops defined."""
    import torch

    if compiled_ops_load():
        return []
    lib = torch.library.Library("torchvision", "FRAGMENT")
    defined = []
    for op, schema in SCHEMAS.items():
        if hasattr(torch.ops.torchvision, op):
            continue
        lib.define(schema)

        def refuse(*args, _op=op, **kwargs):
            raise RuntimeError(WHY.format(op=_op))

        lib.impl(op, refuse, "CPU")
        defined.append(op)
    _LIBRARIES.append(lib)  # a Library deregisters its ops when collected
    return defined


_LIBRARIES: list = []


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            define_missing_ops()
        return None  # the normal finders import torchvision itself


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
