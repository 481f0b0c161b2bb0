"""GPU memory of `emodist finetune` for Qwen2.5-VL-7B: MODELLED, not measured (no GPU here).

    python benchmarks/finetune_memory.py [--gpu-gb 80] [--keyframes 16] [--json out.json]

What one training worker holds at its peak, component by component, for the fine-tuning
settings (finetune.method, dtype, gradient_checkpointing, batch_size, micro_batch_size,
lora_rank, lora_targets), at the model sizes of emodist's two decode widths (224 px, the
default; 448 px, configs/cluster-msce.yaml). The assumptions, printed with the table:
- the architecture is Qwen2.5-VL-7B-Instruct's config.json (below); its parameter count is
  the formula's, which is first checked against the tiny VLM's real count (LLaVA/Llama:
  the same decoder formula without q/k/v biases) and peft's real LoRA count on it;
- an image of W x H px is (W/14)(H/14) vision patches, merged 2x2 into tokens: 64 tokens
  at 224 px, 256 at 448 px; the text is 150 tokens of instructions and options, 9 per
  keyframe (its time, the vision markers), 12 per gap description;
- attention is SDPA (transformers' default on GPU): no sequence x sequence scores kept;
- a decoder layer keeps, per token, its two norms' inputs and outputs, q/k/v and the
  attention output, and the four MLP tensors (gate, act(gate), up, their product):
  6h + 2h_kv + 4i values; LoRA dropout (p > 0) keeps one more copy of each adapted
  layer's input; with gradient checkpointing only each layer's input (h) is kept and one
  layer is recomputed at a time;
- the vision tower is frozen (lora_targets=[language]): nothing of it is kept for the
  backward pass, only one layer's activations for all patches exist at a time (for
  method=full, which trains it, what it keeps is left out: those rows do not fit anyway);
- the answer is read at one position (logits_to_keep=1): the logits are negligible;
- AdamW: two float32 states per trained weight; float32 gradients of trained weights;
- CUDA context, cuBLAS workspace and the allocator's fragmentation: 2.5 GB + 10%.
Real peaks differ (allocator behaviour, kernels' workspaces); tests/gpu is where a GPU
would measure them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GB = 1e9


@dataclass(frozen=True)
class Decoder:
    """A Llama/Qwen2-style decoder (SwiGLU MLP, grouped-query attention)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    qkv_bias: bool
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attn = h * h + 2 * h * kv + h * h + ((h + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * i + 2 * h  # MLP, two RMSNorm weights

    def params(self) -> int:
        return self.layers * self.layer_params() + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def lora_params(self, rank: int) -> int:
        """LoRA on every attention and MLP projection: r x (in + out) each."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        per_layer = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)
        return self.layers * rank * per_layer

    def kept_per_token(self, lora_dropout: bool) -> int:
        """Values one layer keeps per token for the backward pass (see the module text)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return 6 * h + 2 * kv + 4 * i + ((6 * h + i) if lora_dropout else 0)


# Qwen/Qwen2.5-VL-7B-Instruct config.json (text: Qwen2 with q/k/v biases, untied head;
# vision: 32 blocks of 1280 wide, SwiGLU 3420, 14 px patches merged 2x2).
QWEN25VL_7B_TEXT = Decoder(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064,
                           qkv_bias=True, tied=False)
QWEN25VL_7B_VISION = Decoder(hidden=1280, intermediate=3420, layers=32, heads=16, kv_heads=16, vocab=0,
                             qkv_bias=True, tied=True)
VISION_MERGER = 1280 * 4 * 1280 * 4 + 1280 * 4 * 3584  # the 2x2 patch merger's two linears (weights)
PATCH, MERGE = 14, 2


def tokens(px: int, keyframes: int) -> tuple[int, int]:
    """(prompt tokens, vision patches) of one example with `keyframes` images of px x px."""
    patches = (px // PATCH) ** 2
    text = 150 + 9 * keyframes + 12 * max(0, keyframes - 1)
    return text + keyframes * patches // MERGE**2, keyframes * patches


@dataclass(frozen=True)
class Setting:
    name: str
    method: str = "lora"
    bf16: bool = True
    checkpointing: bool = True
    batch: int = 8
    micro: int | None = None
    rank: int = 8
    lora_dropout: float = 0.05


def memory(s: Setting, px: int, keyframes: int) -> dict:
    text, vis = QWEN25VL_7B_TEXT, QWEN25VL_7B_VISION
    total_params = text.params() + vis.layers * vis.layer_params() + VISION_MERGER
    act_bytes = 2 if s.bf16 else 4
    micro = min(s.micro or s.batch, s.batch)
    seq, patches = tokens(px, keyframes)
    out = {}
    if s.method == "lora":
        trained = text.lora_params(s.rank)
        out["weights"] = total_params * act_bytes
        out["trained states"] = trained * (4 + 4 + 8)
    else:  # float32 weights and states; bf16 only in the forward (autocast)
        trained = total_params
        out["weights"] = total_params * 4
        out["trained states"] = trained * (4 + 8)
    per_layer = text.kept_per_token(s.method == "lora" and s.lora_dropout > 0) * act_bytes
    if s.checkpointing:
        kept = micro * seq * (text.layers * text.hidden * act_bytes + per_layer)
    else:
        kept = micro * seq * text.layers * per_layer
    out["activations"] = kept
    out["vision (transient)"] = micro * patches * vis.kept_per_token(False) * act_bytes
    out["logits"] = micro * text.vocab * 4
    subtotal = sum(out.values())
    out["overhead"] = 2.5 * GB + 0.1 * subtotal
    out["total"] = sum(out.values())
    return {"setting": asdict(s), "px": px, "keyframes": keyframes, "tokens_per_example": seq,
            "params": total_params, "trained_params": trained,
            "gb": {k: round(v / GB, 2) for k, v in out.items()}}


def check_formulas() -> list[str]:
    """The parameter formulas against the tiny VLM's real counts (built offline)."""
    from transformers import AutoModelForImageTextToText

    from emodist.config import load_config
    from emodist.finetune.train import load_model
    from emodist.models.hf_engine import resolve_model

    model = AutoModelForImageTextToText.from_pretrained(resolve_model("builtin:tiny-vlm"))
    c = model.config.text_config
    tiny = Decoder(c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
                   c.num_key_value_heads, c.vocab_size, qkv_bias=False, tied=c.tie_word_embeddings)
    real = sum(p.numel() for p in model.model.language_model.parameters())
    real += 0 if c.tie_word_embeddings else model.lm_head.weight.numel()
    assert tiny.params() == real, (tiny.params(), real)
    cfg = load_config(None, ["labeler.backend=transformers", "labeler.model=builtin:tiny-vlm",
                             "finetune.gradient_checkpointing=false"])
    peft_model, _ = load_model(cfg, "cpu")
    lora_real = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert tiny.lora_params(cfg.finetune.lora_rank) == lora_real, (tiny.lora_params(cfg.finetune.lora_rank), lora_real)
    return [f"decoder parameters: formula {tiny.params():,} = the tiny VLM's {real:,}",
            f"LoRA parameters (rank {cfg.finetune.lora_rank}, language): formula = peft's {lora_real:,}"]


SETTINGS = [
    Setting("issue 26's estimate: full, float32, no checkpointing", method="full", bf16=False, checkpointing=False),
    Setting("before: LoRA, bf16 base, no checkpointing", checkpointing=False),
    Setting("defaults now: LoRA, bf16 base, checkpointing"),
    Setting("LoRA, bf16, checkpointing, micro-batch 2", micro=2),
    Setting("LoRA, bf16, no checkpointing, micro-batch 1", checkpointing=False, micro=1),
    Setting("full, bf16 autocast, checkpointing, micro-batch 1", method="full", micro=1),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-gb", type=float, default=80.0)
    ap.add_argument("--keyframes", type=int, default=16, help="plan.max_keyframes (clips long enough to reach it)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-check", action="store_true", help="skip the formula check on the tiny VLM")
    args = ap.parse_args(argv)
    print("MODELLED, not measured: Qwen2.5-VL-7B fine-tuning memory per worker (assumptions: "
          "benchmarks/finetune_memory.py's docstring)")
    if not args.no_check:
        for line in check_formulas():
            print("  checked:", line)
    rows = []
    for px in (224, 448):
        seq, patches = tokens(px, args.keyframes)
        print(f"\n{px} px, {args.keyframes} keyframes: {seq:,} tokens an example ({patches:,} vision patches)")
        print(f"  {'setting':<54} {'weights':>8} {'states':>7} {'activ.':>7} {'total GB':>9}  fits {args.gpu_gb:g} GB")
        for s in SETTINGS:
            m = memory(s, px, args.keyframes)
            gb = m["gb"]
            fits = gb["total"] <= args.gpu_gb
            m["fits"] = fits
            rows.append(m)
            print(f"  {s.name:<54} {gb['weights']:>8.1f} {gb['trained states']:>7.1f} {gb['activations']:>7.1f} "
                  f"{gb['total']:>9.1f}  {'yes' if fits else 'NO'}")
    params = rows[0]["params"]
    print(f"\nQwen2.5-VL-7B: {params / 1e9:.2f} B parameters by the formula. Full fine-tuning keeps "
          f"{params * 16 / GB:.0f} GB of float32 weights, gradients and AdamW states before any activation: "
          "it never fits one 80 GB GPU (it needs its states sharded over several: FSDP or ZeRO-3, which "
          "emodist does not set up). On one 80 GB GPU: finetune.method=lora with finetune.dtype=auto "
          "(bf16) and finetune.gradient_checkpointing=true, the defaults; at 448 px without checkpointing, "
          "finetune.micro_batch_size=1.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
