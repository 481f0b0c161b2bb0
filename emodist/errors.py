"""Errors shared by stages and models (kept apart so models need not import stages).

Two kinds of failure, handled in opposite ways:
- a *clip* error (bad input, a prompt the model refuses, an answer that does not
  parse) fails that clip alone: it becomes a failure row and the run goes on;
- a *fatal* error (the engine died, the GPU is in an error state) says nothing about
  the clip: the actor exits so that Ray restarts it (up to `run.max_actor_restarts`)
  and retries its batches; no clip is marked failed for it.
"""
from __future__ import annotations


class ClipError(Exception):
    """A problem with one clip's input: the message says what and how to fix it.
    The clip becomes a failure row; the run goes on."""


class EngineDead(RuntimeError):
    """The model engine cannot serve any more requests (its process died, its device
    is in an error state). Not the clip's fault: the actor restarts."""


# Exception class names that mean the engine, not the request, is broken, whichever
# library raised them (matched by name: vLLM and CUDA-enabled torch are optional).
FATAL_TYPES = frozenset({
    "EngineDead", "EngineDeadError",  # emodist's own; vLLM's engine core died
    "AcceleratorError",  # torch >= 2.8: a CUDA error that poisons the context
    "DeferredCudaCallError", "CudaError",
})
# Text of device errors that torch raises as plain RuntimeErrors. Out-of-memory is not
# here: a smaller batch (the clip alone) may fit, so it stays a per-clip error.
FATAL_MESSAGES = (
    "CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "CUDNN_STATUS",
    "NCCL error", "illegal memory access", "unspecified launch failure", "ECC error",
    # CUDA's runtime and driver error names, as torchcodec's NVDEC decoder words them
    "cudaErrorLaunchFailure", "cudaErrorIllegalAddress", "cudaErrorECCUncorrectable",
    "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_ECC_UNCORRECTABLE",
)


def is_fatal(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) means the engine or device is gone."""
    seen = 0
    while exc is not None and seen < 8:
        if type(exc).__name__ in FATAL_TYPES:
            return True
        if isinstance(exc, RuntimeError) and any(m in str(exc) for m in FATAL_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
