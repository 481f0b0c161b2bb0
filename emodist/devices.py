"""Which device `auto` means in this process.

In a Ray actor only the GPUs Ray reserved for it count: Ray 2.60 no longer hides a
node's GPUs (CUDA_VISIBLE_DEVICES) from actors that asked for none, so
torch.cuda.is_available() is true in a 0-GPU actor on a GPU node, and it would use a GPU
nobody reserved. placement.settle already settles `auto` per stage at start; this is the
same rule where a model is built without it (a test, a script, an older config).
"""
from __future__ import annotations


def ray_gpu_ids() -> list | None:
    """The GPU ids Ray gave this actor, or None outside a Ray actor."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
            return None
        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - no Ray, or not a worker: not an actor
        return None


def auto_device() -> str:
    """'cuda' where this process may use a GPU (in a Ray actor: one reserved for it), else 'cpu'."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    ids = ray_gpu_ids()
    return "cuda" if ids is None or ids else "cpu"


def require_cuda(what: str) -> None:
    """RuntimeError in one line when `what` (a config key set to cuda) finds no usable
    CUDA in this process: which torch build it is, and what to check."""
    import torch

    if torch.cuda.is_available():
        return
    ids = ray_gpu_ids()
    reserved = "" if ids is None else f"; Ray reserved GPU(s) {ids} for this actor" if ids else \
        "; Ray reserved no GPU for this actor"
    raise RuntimeError(
        f"{what}=cuda but this process sees no usable CUDA device (torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda or 'none: a CPU build'}{reserved}); check `nvidia-smi` and that the driver "
        "supports that CUDA version, or set it to cpu")
