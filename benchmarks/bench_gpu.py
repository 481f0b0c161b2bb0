"""GPU throughput of emodist's two VLM calls, with Qwen2.5-VL-3B's architecture.

For a machine with one NVIDIA GPU, torch and transformers, and nothing else: no Ray, no
vLLM, no internet, no weights. The model is Qwen2.5-VL-3B-Instruct's architecture
built from its config (written below) with random weights, in bf16; the tokenizer is a
byte-level BPE trained here on emodist's prompts, with Qwen's special tokens and chat
format; the image processor is transformers' PIL one for Qwen2-VL (no torchvision). Its
answers mean nothing; its speed is the real model's speed for the same token counts
(a real Qwen tokenizer writes about as many text tokens for these prompts; the image
tokens, 64 per 224x224 frame, dominate anyway).

What runs, as emodist's transformers engine (emodist/models/hf_engine.py) runs it:
- labeler: one prompt per clip, keyframes interleaved with one-line motion
  descriptions, then the lettered options; one forward pass, next-token logits;
- captioner (motion-to-text): one prompt per gap with its 4 in-between frames;
  generate `--new-tokens` tokens (forced: min_new_tokens = max_new_tokens).
Phases (each timed for `--seconds` after a warm-up):
- processor: the processor alone (CPU: chat template, tokenizer, image resize/patchify);
- model only: the same pre-processed batches through the model again and again (the GPU's
  rate when it is never kept waiting); labeler with full logits (what hf.py asks for)
  and with `logits_to_keep=1`;
- serial (emodist before its engine seam): processor then model, batch after batch (the
  GPU waits while the CPU prepares the next batch);
- overlapped (emodist's HFEngine): a processor thread prepares the next batches while
  the model thread runs this one (a queue of one prepared batch between them).
Reports prompts/s, tokens/s (prompt tokens for the labeler, generated tokens for the
captioner), GPU utilisation (nvidia-smi sampled every 100 ms; else
torch.cuda.utilization) and peak GPU memory; prints a table and writes JSON.

    python benchmarks/bench_gpu.py                      # GPU, ~3-4 minutes
    python benchmarks/bench_gpu.py --tiny --seconds 2    # a tiny config on CPU: a smoke test
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

# Qwen/Qwen2.5-VL-3B-Instruct config.json, as transformers 5.24's Qwen2_5_VLConfig fields.
QWEN25_VL_3B = {
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
        "num_attention_heads": 16, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "use_sliding_window": False,
        "sliding_window": 32768, "max_window_layers": 70, "attention_dropout": 0.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "hidden_act": "silu",
        "in_channels": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": True,
}
# A small config of the same architecture, for a smoke test on CPU.
TINY = {
    "text_config": {
        "vocab_size": None, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
    },
    "vision_config": {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "hidden_act": "silu", "in_channels": 3,
        "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [1], "tokens_per_second": 2,
    },
    "tie_word_embeddings": True,
}

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (  # Qwen2.5-VL's chat format, user turn only
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DESCRIPTIONS = ["the lips move upwards into a brief smile", "the brows rise and the mouth opens slightly",
                "the eyes narrow and the mouth corners drop", "no visible motion"]
LABELS = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


# --- prompts: emodist's own when importable, else the same templates (prompt v1) ------------

def _prompts():
    try:
        from emodist.models import prompts

        return prompts.describe_prompt, lambda kf, d, spans, opts: prompts.label_prompt("msce", kf, d, spans, opts)
    except Exception:  # noqa: BLE001 - emodist needs pydantic; this script must not
        pass
    intro = ("Keyframes of a video of a face, in time order, with a description of the "
             "facial motion between each pair of keyframes.")
    describe_t = ("These {n_frames} frames show one face from {start_s:.2f} s to {end_s:.2f} s. "
                  "In one short sentence, describe how the face moves (brows, eyes, mouth).")
    question_t = "Which emotion does the person show?\n{options}\nAnswer with the letter of one option."

    def describe_prompt(n, a, b):
        return [{"type": "image"}] * n + [{"type": "text", "text": describe_t.format(n_frames=n, start_s=a, end_s=b)}]

    def label_prompt(kf, descs, spans, opts):
        parts = [{"type": "text", "text": intro}]
        for k, t in enumerate(kf):
            parts += [{"type": "text", "text": f"\nFrame at {t:.2f} s:"}, {"type": "image"}]
            if k < len(descs):
                parts.append({"type": "text", "text": f"\nFrom {spans[k][0]:.2f} s to {spans[k][1]:.2f} s: {descs[k]}"})
        opts_s = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(opts))
        parts.append({"type": "text", "text": "\n" + question_t.format(options=opts_s)})
        return parts

    return describe_prompt, label_prompt


# --- tokenizer, processor, model ------------------------------------------------------------

def build_processor(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without its video processor (which needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"  # as emodist: the last position is every prompt's next token
    return ImageOnlyProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer,
                              chat_template=CHAT_TEMPLATE)


def build_model(spec: dict, tokenizer, device: str, dtype):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL}
    text = dict(spec["text_config"])
    text["vocab_size"] = text["vocab_size"] or len(tokenizer)
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(spec["vision_config"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tie_word_embeddings"])
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device: seconds, not minutes
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval(), config


# --- GPU utilisation ------------------------------------------------------------------------

class GpuSampler:
    """GPU utilisation (%) and memory (MiB) every 100 ms, from `nvidia-smi -lms`, else
    torch.cuda.utilization(); nothing on CPU."""

    def __init__(self, device: str):
        self.samples: list[tuple[float, float, float]] = []
        self.source = "none"
        self._proc = None
        self._stop = threading.Event()
        self._thread = None
        if not device.startswith("cuda"):
            return
        idx = device.split(":")[1] if ":" in device else "0"
        exe = shutil.which("nvidia-smi")
        if exe:
            self._proc = subprocess.Popen(
                [exe, f"--id={idx}", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.source = "nvidia-smi"
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        else:
            try:
                import torch

                torch.cuda.utilization()
                self.source = "torch.cuda.utilization"
                self._thread = threading.Thread(target=self._poll_torch, daemon=True)
            except Exception:  # noqa: BLE001 - needs pynvml
                self.source = "none (no nvidia-smi, no pynvml)"
        if self._thread:
            self._thread.start()

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            try:
                u, m = (float(x) for x in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), u, m))

    def _poll_torch(self) -> None:
        import torch

        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), float(torch.cuda.utilization()),
                                 torch.cuda.memory_reserved() / 2**20))
            self._stop.wait(0.1)

    def window(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        s = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not s:
            return None, None
        return float(np.mean([u for u, _ in s])), float(np.max([m for _, m in s]))

    def close(self) -> None:
        self._stop.set()
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


# --- the benchmark --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny config of the same architecture (CPU smoke test)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                    help="auto: bfloat16 on GPU, float32 on CPU")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per phase (default 12 on GPU, 2 on CPU)")
    ap.add_argument("--batches", default="16,64", help="prompts per forward to try (emodist uses 16)")
    ap.add_argument("--keyframes", type=int, default=3, help="keyframes per labeler prompt (a 3 s clip: 3)")
    ap.add_argument("--inbetween", type=int, default=4, help="frames per captioner prompt")
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels (emodist decodes at 224)")
    ap.add_argument("--new-tokens", type=int, default=24, help="tokens the captioner generates")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu.json"))
    args = ap.parse_args(argv)

    import torch
    import transformers

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    dtype = getattr(torch, dtype_name)
    seconds = args.seconds or (12.0 if device.startswith("cuda") else 2.0)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if device == "cpu":
        batches = [min(b, 4) for b in batches[:1]]  # the CPU run is a smoke test
    spec = TINY if args.tiny else QWEN25_VL_3B
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    describe_prompt, label_prompt = _prompts()
    kf = [float(k) for k in range(args.keyframes)]
    spans = [(kf[g], kf[g + 1]) for g in range(len(kf) - 1)]
    descs = [DESCRIPTIONS[g % len(DESCRIPTIONS)] for g in range(len(spans))]
    label_parts = label_prompt(kf, descs, spans, LABELS)
    caption_parts = describe_prompt(args.inbetween, 0.0, 1.0)
    corpus = [p["text"] for p in label_parts + caption_parts if p["type"] == "text"] + DESCRIPTIONS + list(LABELS)

    t0 = time.perf_counter()
    processor = build_processor(corpus * 20)
    model, config = build_model(spec, processor.tokenizer, device, dtype)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(64)]
    label_text = processor.apply_chat_template([{"role": "user", "content": label_parts}],
                                               add_generation_prompt=True, tokenize=False)
    caption_text = processor.apply_chat_template([{"role": "user", "content": caption_parts}],
                                                 add_generation_prompt=True, tokenize=False)
    pad_id = processor.tokenizer.pad_token_id

    def prep(kind: str, b: int, offset: int = 0):
        n_img = args.keyframes if kind == "label" else args.inbetween
        text = label_text if kind == "label" else caption_text
        imgs = [frames[(offset + j) % len(frames)] for j in range(b * n_img)]
        return processor(text=[text] * b, images=imgs, return_tensors="pt", padding=True)

    def to_dev(inputs):
        return inputs.to(device)

    def label_forward(inputs, keep: int | None):
        with torch.inference_mode():
            if keep:
                logits = model(**inputs, logits_to_keep=keep).logits[:, -1, :].float()
            else:
                logits = model(**inputs).logits[:, -1, :].float()
            return torch.log_softmax(logits, dim=-1)

    def caption_generate(inputs):
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                  do_sample=False, pad_token_id=pad_id)

    gpu = GpuSampler(device)
    rows = []

    def overlapped(make_inputs, run_model, n: int = 4):
        """n batches the way emodist's HFEngine runs them: one thread prepares (processor,
        host-to-device copy), the caller's thread runs the model, one batch in between."""
        import queue

        ready: queue.Queue = queue.Queue(maxsize=1)

        def prepare():
            for k in range(n):
                ready.put(to_dev(make_inputs(k)))

        t = threading.Thread(target=prepare, daemon=True)
        t.start()
        for _ in range(n):
            run_model(ready.get())
        t.join()

    def phase(name: str, kind: str, b: int, step, prompt_tokens: int, gen_tokens: int = 0,
              per_step: int = 1) -> None:
        """Run `step` (`per_step` batches of b prompts; `prompt_tokens`, `gen_tokens` per
        step) for `seconds` after one warm-up call."""
        step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        n, t_start = 0, time.perf_counter()
        while True:
            step()
            n += 1
            sync()
            if time.perf_counter() - t_start >= seconds:
                break
        t_end = time.perf_counter()
        dt = t_end - t_start
        util, smi_mem = gpu.window(t_start, t_end)
        rows.append({
            "phase": name, "kind": kind, "batch": b, "batches": n, "seconds": round(dt, 3),
            "prompts_per_s": n * b * per_step / dt,
            "prompt_tokens_per_s": n * prompt_tokens / dt,
            "generated_tokens_per_s": n * gen_tokens / dt if gen_tokens else None,
            "gpu_util_pct": util,
            "gpu_mem_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        })
        r = rows[-1]
        print(f"  {name:44s} b={b:<3d} {r['prompts_per_s']:9.2f} prompts/s"
              + (f"  GPU {util:5.1f}%" if util is not None else ""), flush=True)

    print(f"model: {'tiny config' if args.tiny else 'Qwen2.5-VL-3B architecture'}, {n_params / 1e9:.2f} B params, "
          f"random weights, {dtype_name} on {device}; built in {build_s:.1f} s", flush=True)
    token_counts = {}
    for b in batches:
        for kind in ("label", "caption"):
            host = prep(kind, b)
            prompt_tokens = int(host["attention_mask"].sum())
            token_counts[kind] = prompt_tokens // b
            phase(f"{kind}: processor only (CPU)", kind, b, lambda kind=kind: prep(kind, b), prompt_tokens)
            dev = to_dev(host)
            if kind == "label":
                phase("label: model only, full logits", kind, b, lambda: label_forward(dev, None),
                      prompt_tokens)
                phase("label: model only, logits_to_keep=1", kind, b, lambda: label_forward(dev, 1), prompt_tokens)
                phase("label: serial processor + model (before the seam)", kind, b,
                      lambda: label_forward(to_dev(prep("label", b, 1)), 1), prompt_tokens)
                phase("label: overlapped processor + model (HFEngine)", kind, b,
                      lambda: overlapped(lambda k: prep("label", b, k), lambda x: label_forward(x, 1)),
                      4 * prompt_tokens, per_step=4)
            else:
                phase("caption: model only, generate", kind, b, lambda: caption_generate(dev), prompt_tokens,
                      b * args.new_tokens)
                phase("caption: serial processor + generate (before the seam)", kind, b,
                      lambda: caption_generate(to_dev(prep("caption", b, 1))), prompt_tokens, b * args.new_tokens)
                phase("caption: overlapped processor + generate (HFEngine)", kind, b,
                      lambda: overlapped(lambda k: prep("caption", b, k), caption_generate),
                      4 * prompt_tokens, 4 * b * args.new_tokens, per_step=4)
            del dev, host
    gpu.close()

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "dtype": dtype_name, "model": "tiny" if args.tiny else "Qwen2.5-VL-3B (random weights)",
        "params_b": round(n_params / 1e9, 3), "build_s": round(build_s, 1), "torch": torch.__version__,
        "transformers": transformers.__version__, "seconds_per_phase": seconds, "gpu_util_source": gpu.source,
        "tokens_per_prompt": token_counts, "keyframes": args.keyframes, "inbetween": args.inbetween,
        "frame_size": args.size, "new_tokens": args.new_tokens,
        "image_tokens_per_frame": (args.size // 14 // 2) ** 2,
    }
    print()
    print(f"{'phase':48s} {'batch':>5s} {'prompts/s':>10s} {'prompt tok/s':>13s} {'gen tok/s':>10s} {'GPU %':>6s} {'GPU GiB':>8s}")
    for r in rows:
        def f(v, d=1):
            return "-" if v is None else f"{v:,.{d}f}"
        print(f"{r['phase']:48s} {r['batch']:5d} {f(r['prompts_per_s'], 2):>10s} {f(r['prompt_tokens_per_s'], 0):>13s} "
              f"{f(r['generated_tokens_per_s'], 0):>10s} {f(r['gpu_util_pct']):>6s} {f(r['gpu_mem_peak_gib'], 2):>8s}")
    print(f"\ntokens per prompt (incl. image tokens): {token_counts}; GPU utilisation from {gpu.source}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
