"""``ramtag train``: pre-train or fine-tune RAM++ on image-caption(-tag) data, the paper's way.

One optimizer step:

    images -> model view (S px, weights' normalisation) + CLIP view (224 px, same crop)
    captions -> frozen CLIP text encoder -> (B, 512) unit vectors            (no grad, eval)
    CLIP view -> frozen CLIP image encoder -> (B, 512) features             (no grad, eval)
    loss = ASL_tag(logits, tags) + ASL_align(decoder(captions), identity) + L1(pooled, CLIP feature)
    AdamW (wd 0.05), linear warm-up then cosine decay, bf16 autocast where supported,
    optional gradient checkpointing (timm) and gradient accumulation, DDP under torchrun.

The result in ``--out`` is a ramtag weights folder (``ramtag tag --weights OUT``); checkpoints go to
``OUT/checkpoints/step-NNNNNNNN/`` (a weights folder + ``training_state.pt`` with the optimizer state
for ``--resume``); metrics go to ``OUT/metrics.jsonl`` (and TensorBoard with ``--tensorboard``).

New tags (``--tags``) get label embeddings from the open-set machinery (LLM descriptions -> CLIP text
embeddings, cached; CLIP prompt templates without an LLM) and threshold 0.5; the label embedding stays
frozen while training (as the official ``finetune.py`` does), and ``fc`` is shared by all tags in
RAM++, so nothing else depends on the vocabulary. See ``train/README.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from ..batch import default_workers
from ..errors import InputError, TrainingError, UsageError
from ..fsutil import atomic_path, atomic_write_bytes
from ..model.config import CONFIGS, RamPlusConfig, SwinConfig, get_config
from ..model.swin_checkpoint import resize_rel_pos_tables, timm_backbone_state_dict
from ..tags.vocab import OPEN_SET_THRESHOLD, Vocabulary
from ..weights_format import OFFICIAL_PREPROCESSING, Preprocessing
from .data import (
    AUGMENTS,
    Batch,
    Record,
    RecordSet,
    ResumableSampler,
    TaggingDataset,
    ViewTransform,
    build_targets,
    collate,
    load_data,
)
from .distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum_int,
    barrier,
    broadcast_tensor,
    setup,
    teardown,
)
from .losses import RamPlusLosses

if TYPE_CHECKING:
    from ..model.ram_plus import RamPlus

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
OPTIONS_FILE = "train_options.json"
VOCABULARIES = ("auto", "official", "custom", "union")


@dataclass
class TrainOptions:
    """Options of ``ramtag train`` (one field per command-line option)."""

    data: list[str]  # --data, repeatable; "val=PATH" marks a validation split (evaluated while training)
    out: Path  # --out: the result folder (a ramtag weights folder + checkpoints/ + metrics.jsonl)
    init: str | None = None  # --init: weights name | weights folder | official .pth | timm:<swin name> | None
    arch: str | None = None  # --arch: CONFIGS name when not fine-tuning (tiny, swin_b_384, swin_l_384)
    image_size: int | None = None  # --image-size: train at this input size (default: the init's / arch's)
    window_size: int | None = (
        None  # --window-size: Swin window (default: last-stage side, 12 at 384, 7 at 224)
    )
    tags: Path | None = None  # --tags: your tag list (one per line, "tag" or "tag=0.6")
    vocabulary: str = "auto"  # --vocabulary: auto | official | custom | union (auto: union with --tags)
    base_tags: Path | None = None  # --base-tags: tag list of an official .pth given to --init
    base_thresholds: Path | None = None  # --base-thresholds: its threshold list
    descriptions: Path | None = None  # --descriptions: official-format LLM descriptions for new tags
    llm_base_url: str | None = None  # --llm-base-url: OpenAI-compatible server for new tags' descriptions
    llm_model: str | None = None  # --llm-model
    require_llm: bool = False  # --require-llm: fail instead of falling back to CLIP prompt templates
    clip: Path | None = None  # --clip: CLIP ViT-B/16 weights (OpenAI state-dict format); default: download
    image_root: Path | None = None  # --image-root: base folder for the official json's image_path
    epochs: float | None = None  # --epochs (default 2, the official fine-tune, unless --max-steps)
    max_steps: int | None = None  # --max-steps: optimizer steps (overrides --epochs)
    batch_size: int = 8  # --batch-size: images per process per micro-batch
    grad_accum: int = 1  # --grad-accum: micro-batches per optimizer step
    lr: float | None = None  # --lr: peak learning rate (default 5e-6 fine-tuning RAM++, 1e-4 otherwise)
    min_lr: float = 0.0  # --min-lr: learning rate at the end of the cosine decay
    warmup_steps: int | None = None  # --warmup-steps (default 5% of the steps, at most 3000)
    weight_decay: float = 0.05  # --weight-decay (AdamW; not applied to biases, norms, scalars)
    max_grad_norm: float | None = (
        None  # --max-grad-norm: clip gradients (off by default, as the official code)
    )
    precision: str = "auto"  # --precision: auto (bf16 autocast on CUDA if supported) | fp32 | bf16 | fp16
    device: str = "auto"  # --device: auto | cpu | cuda | mps (under torchrun: cuda:LOCAL_RANK)
    grad_checkpointing: bool = False  # --grad-checkpointing: recompute Swin activations (less memory)
    augment: str = "standard"  # --augment: none | flip | standard (crop 20-100 %, flip, RandAugment)
    drop_path: float = 0.1  # --drop-path: Swin stochastic depth (the official 0.1)
    num_workers: int | None = None  # --workers: data-loading processes (default min(4, CPUs))
    save_every: int = 1000  # --save-every: checkpoint every N optimizer steps (0 = only at the end)
    keep_checkpoints: int = 2  # --keep-checkpoints: newest N checkpoints kept
    eval_every: int | None = None  # --eval-every: evaluate the val split every N steps (default save_every)
    resume: bool = False  # --resume: continue from the newest checkpoint in --out
    seed: int = 0  # --seed
    tag_loss_weight: float = 1.0  # --tag-loss-weight
    align_loss_weight: float = 1.0  # --align-loss-weight (0 = no image-text alignment loss)
    distill_loss_weight: float = 1.0  # --distill-loss-weight (0 = no CLIP distillation)
    train_label_embed: bool = False  # --train-label-embed: also train the description embeddings
    log_every: int = 10  # --log-every: metrics line every N steps
    tensorboard: bool = False  # --tensorboard: also log to OUT/tensorboard (needs the tensorboard package)
    progress: bool = True  # --no-progress: no live progress display
    exif_orientation: bool = True  # --no-exif-orientation: use pixels as stored (the official decode)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What ``ramtag train`` produced."""

    out: Path  # the trained weights folder
    steps: int  # optimizer steps done in total
    epochs: float  # epochs done (fractional)
    images: int  # training images used
    skipped: int  # images skipped because they could not be read
    num_tags: int
    new_tags: list[str]  # tags that were not in the initial weights
    losses: dict[str, float]  # the last logged losses
    val: dict[str, Any] | None = None  # last validation metrics (mAP, F1, ...) when there is a val split
    seconds: float = 0.0
    checkpoints: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["checkpoints"] = [str(p) for p in self.checkpoints]
        return d


# -- the initial model ----------------------------------------------------------------------------


@dataclass
class _Base:
    """The starting point: architecture, tensors (ramtag names) and vocabulary (None = random init)."""

    config: RamPlusConfig
    state_dict: dict[str, Tensor] | None
    vocabulary: Vocabulary | None
    preprocessing: Preprocessing
    source: str  # for the provenance
    pretrained: bool  # True when the tagging part is already trained (fine-tuning)


def _load_base(options: TrainOptions) -> _Base:
    init = options.init
    if init is None or init.startswith("timm:"):
        if options.arch is None and init is None:
            raise UsageError(
                "pass --init WEIGHTS to fine-tune, or --arch NAME to train from scratch "
                f"(architectures: {', '.join(CONFIGS)})"
            )
        config = get_config(options.arch or "swin_l_384")
        return _Base(
            config, None, None, OFFICIAL_PREPROCESSING, init or f"random {config.name}", pretrained=False
        )
    path = Path(init).expanduser()
    if path.is_file():  # an official-format .pth
        from ..model.convert import (
            convert_official_state_dict,
            infer_official_config,
            read_official_checkpoint,
        )

        official = read_official_checkpoint(path)
        config = infer_official_config(official)
        vocab = _official_vocabulary(options, config.num_tags, path)
        sd = convert_official_state_dict(official, config, source=str(path))
        return _Base(
            config, sd, vocab, OFFICIAL_PREPROCESSING, f"official checkpoint {path}", pretrained=True
        )
    from ..weights import resolve_weights
    from ..weights_format import load_weights

    loaded = load_weights(resolve_weights(init))
    return _Base(
        loaded.config,
        loaded.state_dict,
        loaded.vocabulary,
        loaded.preprocessing,
        f"weights {loaded.directory}",
        pretrained=True,
    )


def _official_vocabulary(options: TrainOptions, num_tags: int, checkpoint: Path) -> Vocabulary:
    if options.base_tags is not None:
        return Vocabulary.from_files(options.base_tags, options.base_thresholds)
    from ..registry import DEFAULT_WEIGHTS, WEIGHTS

    spec = WEIGHTS[DEFAULT_WEIGHTS]
    if num_tags != 4585:
        raise UsageError(
            f"{checkpoint}: has {num_tags} tags; pass its tag list with --base-tags (and --base-thresholds)"
        )
    from .. import hub

    return Vocabulary.from_files(
        hub.fetch_url(spec.tag_list),
        hub.fetch_url(spec.thresholds),
        hub.fetch_url(spec.tag_list_zh) if spec.tag_list_zh else None,
    )


@dataclass
class _VocabPlan:
    vocabulary: Vocabulary  # the vocabulary to train
    source: list[int | None]  # per tag: its row in the base label_embed, or None (new tag)
    new: list[str]  # new tag names, in vocabulary order


def _plan_vocabulary(base: Vocabulary | None, options: TrainOptions) -> _VocabPlan:
    """Which tags to train and where each one's label embedding comes from."""
    from ..text.openset import parse_open_set

    mode = options.vocabulary
    if mode not in VOCABULARIES:
        raise UsageError(f"--vocabulary {mode!r} is unknown; choose one of {', '.join(VOCABULARIES)}")
    user = parse_open_set(None, options.tags) if options.tags is not None else []
    if options.tags is not None and not user:
        raise InputError(f"{options.tags}: no tags in the file; write one tag per line")
    if mode == "auto":
        mode = "union" if user and base is not None else ("custom" if user else "official")
    if mode == "official" or (mode == "union" and not user):
        if base is None:
            raise UsageError("training from scratch needs a vocabulary: pass --tags FILE")
        return _VocabPlan(base, list(range(len(base))), [])
    if not user:
        raise UsageError(f"--vocabulary {mode} needs --tags FILE")
    index = base.index() if base is not None else {}
    names: list[str] = []
    thresholds: list[float] = []
    zh: list[str] = []
    source: list[int | None] = []
    if mode == "union":
        assert base is not None
        names, thresholds, source = list(base.names), list(base.thresholds), list(range(len(base)))
        zh = list(base.names_zh) if base.names_zh is not None else []
    for t in user:
        i = index.get(t.name.lower())
        if i is not None and mode == "union":
            if t.explicit_threshold:
                thresholds[i] = t.threshold
            continue
        names.append(base.names[i] if (base is not None and i is not None) else t.name)
        default = base.thresholds[i] if (base is not None and i is not None) else OPEN_SET_THRESHOLD
        thresholds.append(t.threshold if t.explicit_threshold else default)
        source.append(i)
        if base is not None and base.names_zh is not None:
            zh.append(base.names_zh[i] if i is not None else t.name)
    new = [n for n, s in zip(names, source, strict=True) if s is None]
    vocab = Vocabulary(tuple(names), tuple(thresholds), tuple(zh) if zh and len(zh) == len(names) else None)
    return _VocabPlan(vocab, source, new)


def _new_tag_embeddings(
    plan: _VocabPlan, options: TrainOptions, encoder: Any
) -> tuple[Tensor, dict[str, str]]:
    """(n_new, 51, 512) label embeddings of the new tags (open-set machinery) and where each came from."""
    from ..text.llm import LLMSettings
    from ..text.openset import build_open_set

    llm = LLMSettings.from_env(base_url=options.llm_base_url, model=options.llm_model)
    opened = build_open_set(
        plan.new,
        vocabulary=Vocabulary((), ()),
        descriptions_file=options.descriptions,
        clip_file=options.clip,
        llm=llm,
        require_llm=options.require_llm,
        encoder=encoder,
    )
    return opened.label_embed, dict(opened.sources)


def _target_config(base: _Base, options: TrainOptions, num_tags: int) -> tuple[RamPlusConfig, Preprocessing]:
    config = base.config
    if options.arch is not None and base.state_dict is not None and options.arch != config.name:
        log.warning("--arch %s ignored: the architecture comes from --init (%s)", options.arch, config.name)
    swin = config.swin
    size = options.image_size or swin.img_size
    window = options.window_size
    if window is None:
        window = (
            swin.window_size
            if size == swin.img_size
            else size // swin.patch_size // 2 ** (len(swin.depths) - 1)
        )
    if size % (swin.patch_size * 2 ** (len(swin.depths) - 1)):
        raise UsageError(
            f"--image-size {size} must be a multiple of {swin.patch_size * 2 ** (len(swin.depths) - 1)} "
            f"for this Swin ({len(swin.depths)} stages, patch {swin.patch_size})"
        )
    side = size // swin.patch_size
    for stage in range(len(swin.depths)):
        res = side // 2**stage
        if res > window and res % window:
            raise UsageError(
                f"--window-size {window} does not tile stage {stage + 1} ({res}x{res} tokens) at "
                f"{size} px; pick a divisor (the official choice is {side // 2 ** (len(swin.depths) - 1)})"
            )
    new_swin = SwinConfig(**{**asdict(swin), "img_size": size, "window_size": window})
    config = replace(config, swin=new_swin, num_tags=num_tags)
    pre = replace(base.preprocessing, image_size=size)
    return config, pre


def _build_model(
    base: _Base, config: RamPlusConfig, plan: _VocabPlan, new_embed: Tensor | None, options: TrainOptions
) -> RamPlus:
    """The model to train: base tensors where they exist, the new tags' description embeddings,
    the rest random."""
    from ..model.convert import load_state_dict_strict
    from ..model.ram_plus import RamPlus

    model = RamPlus(config, drop_path_rate=options.drop_path)
    D, E = config.descriptions_per_tag, config.embed_dim
    rows = []
    base_rows = None
    if base.state_dict is not None:
        base_rows = base.state_dict["label_embed"].view(-1, D, E)  # (T_base, D, E)
    k = 0
    for src in plan.source:
        if src is None:
            assert new_embed is not None
            rows.append(new_embed[k].to(torch.float32))
            k += 1
        else:
            assert base_rows is not None
            rows.append(base_rows[src].to(torch.float32))
    label_embed = torch.stack(rows).reshape(-1, E)  # (T * D, E)
    if base.state_dict is not None:
        sd = dict(base.state_dict)
        sd["label_embed"] = label_embed
        sd = resize_rel_pos_tables(sd, model.state_dict())
        load_state_dict_strict(model, sd, source=base.source)
    else:
        with torch.no_grad():
            model.label_embed.copy_(label_embed)
        if options.init is not None and options.init.startswith("timm:"):
            _load_timm_backbone(model, options.init.removeprefix("timm:"))
    return model


def _load_timm_backbone(model: RamPlus, name: str) -> None:
    """ImageNet Swin weights from timm: ``timm.create_model(name, pretrained=True)``. timm's Hub weights
    are downloaded by :func:`ramtag.hub.fetch_hub_file` (bounded attempts and time, resumable; the network
    once, then ramtag's cache) and handed to timm as a file, so timm applies its own checkpoint filter."""
    import timm
    from timm.models import get_pretrained_cfg

    from .. import hub
    from ..errors import DownloadError
    from ..paths import offline
    from ..registry import HubFile

    if offline():
        raise TrainingError(
            f"--init timm:{name} downloads ImageNet weights, but downloads are off (RAMTAG_OFFLINE / "
            "HF_HUB_OFFLINE); run once online or pre-fill the Hugging Face cache"
        )
    overlay: dict[str, Any] = {}
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        weights = HubFile(cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors", "main", None, None)
        try:
            overlay["file"] = str(hub.fetch_hub_file(weights))
        except DownloadError as e:
            raise TrainingError(f"--init timm:{name}: {e}") from e
    else:  # not on the Hub (or an unknown name, which timm reports below): timm downloads it itself
        log.warning("downloading ImageNet weights for timm model %s (once, through timm)", name)
    try:
        source = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as e:
        raise TrainingError(
            f"--init timm:{name}: timm could not create it with pretrained weights "
            f"({type(e).__name__}: {e}); use a Swin v1 name like swin_large_patch4_window12_384"
        ) from None
    encoder: nn.Module = model.visual_encoder
    sd, bad, missing = timm_backbone_state_dict(source.state_dict(), encoder.state_dict())
    if bad:
        raise TrainingError(
            f"--init timm:{name}: does not match the {model.config.name} backbone "
            f"({', '.join(bad[:5])}); pick the Swin of the same size as --arch"
        )
    if missing:
        raise TrainingError(
            f"--init timm:{name}: missing backbone tensors ({', '.join(missing[:5])}); "
            "pick the Swin of the same size as --arch"
        )
    encoder.load_state_dict(sd, strict=False)  # extra source tensors (not in our backbone) are ignored


# -- helpers ---------------------------------------------------------------------------------------


def _lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up from ~0 to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``
    at step ``total``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith("relative_position_bias_table"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step-")
        and (p / STATE_FILE).is_file()
        and (p / "ramtag.json").is_file()
    )


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class _MetricsLog:
    """JSON Lines metrics (+ TensorBoard when asked and installed); rank 0 only."""

    def __init__(self, out: Path, tensorboard: bool):
        self.path = out / METRICS_FILE
        self.tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("--tensorboard ignored: tensorboard is not installed (pip install tensorboard)")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = int(record.get("step", 0))
            prefix = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TrainProgress(Protocol):
    """A live progress display for :func:`train` (the CLI passes a rich bar); called on rank 0 only."""

    def start(self, total: int, done: int) -> None: ...  # optimizer steps in all / already done
    def update(self, step: int, info: str) -> None: ...  # info: running losses and learning rate
    def close(self) -> None: ...


_REPORTER: ContextVar[TrainProgress | None] = ContextVar("ramtag_train_progress", default=None)


class _Progress:
    """The reporter given to :func:`train` (rank 0, when ``options.progress``), else an INFO log line
    every 30 s; the training package itself displays nothing."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.reporter = _REPORTER.get() if enabled else None
        self.total, self.last = total, time.monotonic()
        if self.reporter is not None:
            self.reporter.start(total, start)

    def update(self, step: int, info: str) -> None:
        if self.reporter is not None:
            self.reporter.update(step, info)
        elif time.monotonic() - self.last >= 30:
            self.last = time.monotonic()
            log.info("train: step %d/%d  %s", step, self.total, info)

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()


def _fmt_losses(values: dict[str, float], lr: float) -> str:
    parts = [f"{k} {values[k]:.4g}" for k in ("loss", "tag", "align", "distill") if k in values]
    return "  ".join(parts) + f"  lr {lr:.2e}"


# -- train -----------------------------------------------------------------------------------------


def train(options: TrainOptions, *, progress: TrainProgress | None = None) -> TrainResult:
    """Train (see the module docstring); returns where the weights went and how it went.

    ``progress`` shows the steps (e.g. the CLI's progress bar); without it, INFO log lines."""
    token = _REPORTER.set(progress)
    ctx = setup(options.device)
    try:
        return _train(options, ctx)
    finally:
        teardown(ctx)
        _REPORTER.reset(token)


def _check_options(options: TrainOptions) -> None:
    if options.batch_size < 1 or options.grad_accum < 1:
        raise UsageError("--batch-size and --grad-accum must be at least 1")
    if options.max_steps is not None and options.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    if options.epochs is not None and options.epochs <= 0:
        raise UsageError("--epochs must be positive")
    if options.augment not in AUGMENTS:
        raise UsageError(f"--augment {options.augment!r} is unknown; choose one of {', '.join(AUGMENTS)}")


@dataclass
class _Run:
    """What a training run is made of (built once by :func:`_setup`, read by every later stage)."""

    options: TrainOptions
    ctx: DistContext
    out: Path  # the result folder
    resume_from: Path | None  # the checkpoint resumed, or None
    model: RamPlus
    config: RamPlusConfig
    preprocessing: Preprocessing
    plan: _VocabPlan
    clip_model: Any  # the frozen CLIP (text + image towers) or None when no loss needs it
    train_records: list[Record]
    val_records: list[Record]
    id_names: list[str] | None  # the official tag list union_label_id indexes, when the vocabulary has it
    dataset: TaggingDataset
    sampler: ResumableSampler
    loader_kwargs: dict[str, Any]  # DataLoader arguments besides the dataset
    batches_per_epoch: int
    total_steps: int
    warmup: int
    peak_lr: float
    wrapped: nn.Module  # the losses module, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    provenance: dict[str, Any]  # recorded in every saved ramtag.json
    metrics: _MetricsLog | None  # rank 0 only, opened by _open_outputs
    progress: _Progress | None  # set by _train once the start step is known; displays on rank 0 only

    @property
    def names(self) -> list[str]:
        return list(self.plan.vocabulary.names)


@dataclass
class _State:
    """Where a run is and what it has seen (changes every step; saved in checkpoints)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch done (resume skips them)
    micro: int = 0  # micro-batches done by this process since it started
    skipped: int = 0  # unreadable images
    first_batch: bool = True
    window: dict[str, float] = field(default_factory=dict)  # summed losses since the last metrics line
    window_n: int = 0
    window_images: int = 0
    window_start: float = field(default_factory=time.time)
    last_losses: dict[str, float] = field(default_factory=dict)
    val_result: dict[str, Any] | None = None
    checkpoints: list[Path] = field(default_factory=list)

    def epochs_done(self, batches_per_epoch: int) -> float:
        return round(self.epoch + self.batch_in_epoch / batches_per_epoch, 4)


def _train(options: TrainOptions, ctx: DistContext) -> TrainResult:
    started = time.time()
    run = _setup(options, ctx)
    state = _restore(run)
    _open_outputs(run)
    run.progress = _Progress(options.progress and ctx.is_main, run.total_steps, state.step)
    try:
        return _train_loop(run, state, started)
    finally:
        run.progress.close()


def _train_loop(run: _Run, state: _State, started: float) -> TrainResult:
    """Epochs until the step budget is spent, the final checkpoints, the result."""
    ctx = run.ctx
    run.optimizer.zero_grad(set_to_none=True)
    while state.step < run.total_steps:
        if _train_one_epoch(run, state):
            break
        state.epoch += 1
        state.batch_in_epoch = 0
    if ctx.is_main:
        _save(run, state, run.out, with_state=False)
        # a final resumable checkpoint, so --resume with more --max-steps / --epochs can continue
        _checkpoint(run, state)
        if run.metrics is not None:
            run.metrics.close()
    barrier(ctx)
    skipped = all_reduce_sum_int(ctx, state.skipped)
    return TrainResult(
        out=run.out,
        steps=state.step,
        epochs=state.epochs_done(run.batches_per_epoch),
        images=len(run.train_records),
        skipped=skipped,
        num_tags=len(run.plan.vocabulary),
        new_tags=list(run.plan.new),
        losses=state.last_losses,
        val=state.val_result,
        seconds=round(time.time() - started, 2),
        checkpoints=[c for c in state.checkpoints if c.exists()],
    )


# -- setup -----------------------------------------------------------------------------------------


def _resume_dir(options: TrainOptions, out: Path) -> Path | None:
    """The checkpoint to resume from (``--resume``), or None; refuses to overwrite a finished run."""
    if options.resume:
        found = _checkpoint_dirs(out)
        if not found:
            raise TrainingError(
                f"{out}: no checkpoint to resume from (expected {CHECKPOINTS}/step-*/{STATE_FILE}); "
                "drop --resume to start a new run"
            )
        return found[-1]
    if (out / "ramtag.json").exists() or _checkpoint_dirs(out):
        raise TrainingError(
            f"{out}: already holds a training run; pass --resume to continue it or choose a new --out"
        )
    return None


def _setup(options: TrainOptions, ctx: DistContext) -> _Run:
    """Model, data, optimizer and bookkeeping of a run (nothing trained yet)."""
    _check_options(options)
    out = Path(options.out).expanduser()
    resume_from = _resume_dir(options, out)
    torch.manual_seed(options.seed + ctx.rank)
    random.seed(options.seed + ctx.rank)
    model, config, preprocessing, plan, clip_model, provenance = _setup_model(options, ctx, resume_from)
    train_records, val_records, id_names, dataset = _setup_data(options, ctx, plan, preprocessing, clip_model)
    sampler, loader_kwargs, batches_per_epoch = _setup_loader(options, ctx, dataset)
    total_steps, warmup, peak_lr = _schedule(options, batches_per_epoch, resume_from)
    wrapped, optimizer, amp_dtype, scaler = _setup_optimizer(options, ctx, model, peak_lr)
    provenance["images"] = len(train_records)
    return _Run(
        options=options,
        ctx=ctx,
        out=out,
        resume_from=resume_from,
        model=model,
        config=config,
        preprocessing=preprocessing,
        plan=plan,
        clip_model=clip_model,
        train_records=train_records,
        val_records=val_records,
        id_names=id_names,
        dataset=dataset,
        sampler=sampler,
        loader_kwargs=loader_kwargs,
        batches_per_epoch=batches_per_epoch,
        total_steps=total_steps,
        warmup=warmup,
        peak_lr=peak_lr,
        wrapped=wrapped,
        optimizer=optimizer,
        amp_dtype=amp_dtype,
        scaler=scaler,
        provenance=provenance,
        metrics=None,
        progress=None,
    )


def _setup_loader(
    options: TrainOptions, ctx: DistContext, dataset: TaggingDataset
) -> tuple[ResumableSampler, dict[str, Any], int]:
    """This rank's sampler, the DataLoader arguments (besides the dataset) and micro-batches per epoch."""
    per_step = options.batch_size * ctx.world_size
    drop_last = len(dataset) >= per_step
    sampler = ResumableSampler(
        dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=True,
        seed=options.seed,
        drop_last=drop_last,
    )
    loader_kwargs = {
        "batch_size": options.batch_size,
        "sampler": sampler,
        "num_workers": options.num_workers if options.num_workers is not None else default_workers(),
        "collate_fn": collate,
        "drop_last": drop_last,
        "pin_memory": ctx.device.type == "cuda",
        "persistent_workers": False,
    }
    full_batches = len(dataset) // per_step if drop_last else math.ceil(len(dataset) / per_step)
    batches_per_epoch = max(1, full_batches)
    return sampler, loader_kwargs, batches_per_epoch


def _schedule(
    options: TrainOptions, batches_per_epoch: int, resume_from: Path | None
) -> tuple[int, int, float]:
    """(total optimizer steps, warm-up steps, peak learning rate)."""
    if options.max_steps is not None:
        total_steps = options.max_steps
    else:
        total_steps = max(1, math.ceil((options.epochs or 2.0) * batches_per_epoch / options.grad_accum))
    warmup = (
        options.warmup_steps if options.warmup_steps is not None else min(3000, round(0.05 * total_steps))
    )
    peak_lr = options.lr if options.lr is not None else (5e-6 if _is_finetune(options, resume_from) else 1e-4)
    return total_steps, warmup, peak_lr


def _setup_model(
    options: TrainOptions, ctx: DistContext, resume_from: Path | None
) -> tuple[RamPlus, RamPlusConfig, Preprocessing, _VocabPlan, Any, dict[str, Any]]:
    """The model to train, its vocabulary plan, the frozen CLIP (or None) and the run's provenance."""
    # On resume the checkpoint is the base (same vocabulary, trained tensors).
    init_provenance: dict[str, Any] = {}
    if resume_from is not None:
        base = _load_base(replace(options, init=str(resume_from)))
        assert base.vocabulary is not None
        plan = _VocabPlan(base.vocabulary, list(range(len(base.vocabulary))), [])
        with contextlib.suppress(Exception):
            meta = json.loads((resume_from / "ramtag.json").read_text(encoding="utf-8"))
            init_provenance = meta.get("provenance", {})
    else:
        base = _load_base(options)
        plan = _plan_vocabulary(base.vocabulary, options)
    config, preprocessing = _target_config(base, options, len(plan.vocabulary))
    new_embed, sources, clip_model = _setup_clip(options, ctx, plan, config)
    model = _build_model(base, config, plan, new_embed, options)
    del base
    model.label_embed.requires_grad_(options.train_label_embed)
    if options.grad_checkpointing:
        model.visual_encoder.set_grad_checkpointing(True)  # timm: recompute activations in backward
    model.to(ctx.device)
    model.train()
    fresh = resume_from is None
    provenance = {
        **({} if fresh else {"resumed_from": str(resume_from)}),
        "source": "ramtag train",
        "init": options.init if fresh else init_provenance.get("init", options.init),
        "data": [str(d) for d in options.data],
        "images": 0,  # set once the data is read
        "new_tags": plan.new if fresh else init_provenance.get("new_tags", []),
        "new_tag_descriptions": sources if fresh else init_provenance.get("new_tag_descriptions", {}),
        "options": {k: v for k, v in options.to_dict().items() if k not in ("llm_base_url",)},
    }
    return model, config, preprocessing, plan, clip_model, provenance


def _setup_clip(
    options: TrainOptions, ctx: DistContext, plan: _VocabPlan, config: RamPlusConfig
) -> tuple[Tensor | None, dict[str, str], Any]:
    """The frozen CLIP (text tower for captions and new tags; image tower for distillation): the new
    tags' label embeddings (None when there are none), where they came from, and the CLIP model for the
    losses (None when no loss needs it)."""
    need_clip = options.align_loss_weight > 0 or options.distill_loss_weight > 0 or bool(plan.new)
    encoder = None
    if need_clip:
        from ..text.clip import ClipTextEncoder

        encoder = ClipTextEncoder(options.clip, device=ctx.device)
    new_embed = None
    sources: dict[str, str] = {}
    if plan.new:
        shape = (len(plan.new), config.descriptions_per_tag, config.embed_dim)
        local = None
        if ctx.is_main:
            local, sources = _new_tag_embeddings(plan, options, encoder)
            if tuple(local.shape) != shape:
                raise TrainingError(
                    f"new tag embeddings have shape {tuple(local.shape)}, expected {shape}; "
                    "--clip must be a CLIP with 512-wide text features (ViT-B/16)"
                )
        new_embed = broadcast_tensor(ctx, local, shape)
        shown = ", ".join(plan.new[:20]) + (" ..." if len(plan.new) > 20 else "")
        log.info("new tags (%d): %s", len(plan.new), shown)
    clip_model = None
    if options.align_loss_weight > 0 or options.distill_loss_weight > 0:
        assert encoder is not None
        clip_model = encoder.model
        if clip_model.embed_dim != config.embed_dim:
            raise TrainingError(
                f"{options.clip}: CLIP features are {clip_model.embed_dim} wide but RAM++ needs "
                f"{config.embed_dim}; use CLIP ViT-B/16"
            )
    return new_embed, sources, clip_model


def _setup_data(
    options: TrainOptions, ctx: DistContext, plan: _VocabPlan, preprocessing: Preprocessing, clip_model: Any
) -> tuple[list[Record], list[Record], list[str] | None, TaggingDataset]:
    """Records (train and val), the official id list and the training dataset."""
    records = load_data(options.data, image_root=options.image_root)
    if ctx.is_main:
        for p in records.problems[:20]:
            log.warning("%s", p)
        if len(records.problems) > 20:
            log.warning("... and %d more data problems", len(records.problems) - 20)
    train_records = [r for r in records.records if r.split in (None, "train")]
    val_records = [r for r in records.records if r.split == "val"]
    if not train_records:
        raise TrainingError(
            "no training images left (every entry was skipped or marked val/test; see the warnings)"
        )
    names = list(plan.vocabulary.names)
    from .evaluate import official_id_names

    id_names = official_id_names(names)
    targets = build_targets(train_records, names, id_names=id_names)
    if ctx.is_main:
        if targets.unknown_tags:
            shown = ", ".join(f"{t} ({n})" for t, n in targets.unknown_tags.most_common(10))
            log.warning("tags not in the vocabulary were ignored: %s; add them with --tags", shown)
        if targets.untagged:
            log.warning(
                "%d of %d training images have no tag from the vocabulary (they still train the "
                "image-text alignment and distillation)",
                targets.untagged,
                len(train_records),
            )
    distill = clip_model is not None and options.distill_loss_weight > 0
    transform = ViewTransform.for_weights(
        preprocessing, clip_size=clip_model.image_size if distill else None, augment=options.augment
    )
    dataset = TaggingDataset(
        train_records,
        targets.positives,
        len(names),
        transform,
        seed=options.seed,
        exif_orientation=options.exif_orientation,
    )
    return train_records, val_records, id_names, dataset


def _setup_optimizer(
    options: TrainOptions, ctx: DistContext, model: RamPlus, peak_lr: float
) -> tuple[nn.Module, torch.optim.Optimizer, torch.dtype | None, torch.amp.GradScaler]:
    """The losses module (DDP-wrapped under torchrun), AdamW, the autocast dtype and the fp16 scaler."""
    losses_module = RamPlusLosses(
        model,
        tag_weight=options.tag_loss_weight,
        align_weight=options.align_loss_weight,
        distill_weight=options.distill_loss_weight,
    ).to(ctx.device)
    wrapped: nn.Module = losses_module
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            losses_module,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=False,
        )
    optimizer = torch.optim.AdamW(
        _param_groups(model, options.weight_decay), lr=peak_lr, weight_decay=options.weight_decay
    )
    amp_dtype = _amp_dtype(options.precision, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16)
    return wrapped, optimizer, amp_dtype, scaler


def _open_outputs(run: _Run) -> None:
    """Rank 0: the result folder, its ``train_options.json`` and the metrics log."""
    if run.ctx.is_main:
        run.metrics = _MetricsLog(run.out, run.options.tensorboard)
        run.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(run.options.to_dict(), indent=2) + "\n"
        atomic_write_bytes(run.out / OPTIONS_FILE, text.encode("utf-8"))


def _restore(run: _Run) -> _State:
    """A fresh :class:`_State`, or the resumed checkpoint's (optimizer, scaler and RNG restored too)."""
    state = _State()
    if run.resume_from is None:
        return state
    saved = torch.load(run.resume_from / STATE_FILE, map_location="cpu", weights_only=True)
    run.optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    state.step, state.epoch = int(saved["step"]), int(saved["epoch"])
    state.batch_in_epoch = int(saved["batch_in_epoch"])
    _set_rng_state(saved.get("rng", {}))
    if run.ctx.is_main:
        log.info("resuming from %s (step %d, epoch %d)", run.resume_from, state.step, state.epoch)
    if state.step >= run.total_steps:
        raise TrainingError(
            f"{run.resume_from}: already at step {state.step} of {run.total_steps}; raise --max-steps / "
            "--epochs to train longer"
        )
    return state


# -- one epoch -------------------------------------------------------------------------------------


def _train_one_epoch(run: _Run, state: _State) -> bool:
    """Train from ``state.batch_in_epoch`` to the end of the epoch; True when the run reached its last
    step (the epoch may be unfinished)."""
    from torch.utils.data import DataLoader

    options, ctx = run.options, run.ctx
    run.sampler.set_epoch(state.epoch)
    run.dataset.epoch = state.epoch
    run.sampler.skip = state.batch_in_epoch * options.batch_size
    for batch in DataLoader(run.dataset, **run.loader_kwargs):
        state.batch_in_epoch += 1
        state.skipped += len(batch.failures)
        if ctx.is_main:
            for f in batch.failures:
                log.warning("skipped unreadable image: %s", f.reason)
        usable = all_reduce_sum_int(ctx, int(len(batch) > 0)) if ctx.distributed else int(len(batch) > 0)
        if usable < ctx.world_size:  # some rank has nothing to train on: everyone skips this micro-batch
            if state.first_batch and not len(batch):
                reason = batch.failures[0].reason if batch.failures else "empty batch"
                raise TrainingError(f"the first batch has no readable image ({reason}); check --data")
            continue
        state.first_batch = False
        state.micro += 1
        last_micro = state.micro % options.grad_accum == 0
        _forward_backward(run, state, batch, sync=last_micro or not ctx.distributed)
        if not last_micro:
            continue
        lr = _optimizer_step(run, state)
        _log_step(run, state, lr)
        if run.val_records and _due(run.options.eval_every, options.save_every, state.step, run.total_steps):
            state.val_result = _evaluate(run)
            if run.metrics is not None and state.val_result is not None:
                run.metrics.write({"step": state.step, "split": "val", **state.val_result})
        if options.save_every and state.step % options.save_every == 0 and state.step < run.total_steps:
            if ctx.is_main:
                _checkpoint(run, state)
            barrier(ctx)
        if state.step >= run.total_steps:
            return True
    return False


def _due(eval_every: int | None, save_every: int, step: int, total: int) -> bool:
    """Whether to evaluate after ``step`` (every ``eval_every`` steps, default ``save_every``, and last)."""
    every = eval_every if eval_every is not None else save_every
    return bool(every) and (step % every == 0 or step == total)


def _forward_backward(run: _Run, state: _State, batch: Batch, *, sync: bool) -> None:
    """Losses of one micro-batch and their gradients (scaled by 1/grad_accum); the losses are summed
    into ``state.window`` for the next metrics line."""
    options, ctx, clip_model = run.options, run.ctx, run.clip_model
    images = batch.images.to(ctx.device, non_blocking=True)  # (B, 3, S, S)
    target = batch.targets.to(ctx.device, non_blocking=True)  # (B, T)
    # DDP all-reduces gradients only on the last micro-batch of an accumulation
    no_sync = contextlib.nullcontext() if sync else run.wrapped.no_sync()  # type: ignore[operator]
    amp = run.amp_dtype
    with no_sync:
        with torch.autocast(ctx.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            text_embeds = clip_image = None
            if clip_model is not None and options.align_loss_weight > 0:
                text_embeds = clip_model.encode_text(batch.captions).to(ctx.device)  # (B, 512) unit rows
            if clip_model is not None and batch.clip_images is not None:
                clip_image = clip_model.encode_image(batch.clip_images, normalize=False)  # (B, 512)
            out_losses = run.wrapped(images, target, text_embeds, clip_image)
        loss = out_losses["loss"] / options.grad_accum
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {state.step}; lower --lr or use --precision fp32"
            )
        run.scaler.scale(loss).backward()
    for k, v in out_losses.items():
        state.window[k] = state.window.get(k, 0.0) + float(v.detach())
    state.window_n += 1
    state.window_images += len(batch)


def _optimizer_step(run: _Run, state: _State) -> float:
    """One AdamW step at the scheduled learning rate (which it returns); gradients are cleared."""
    options = run.options
    lr = _lr_at(state.step, run.total_steps, run.warmup, run.peak_lr, options.min_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if options.max_grad_norm:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), options.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    return lr


def _log_step(run: _Run, state: _State, lr: float) -> None:
    """Every ``log_every`` steps (and the last): average the losses over ranks into a metrics line."""
    step, ctx = state.step, run.ctx
    if step % run.options.log_every == 0 or step == run.total_steps:
        avg = all_reduce_mean(ctx, {k: v / max(1, state.window_n) for k, v in state.window.items()})
        elapsed = time.time() - state.window_start
        state.last_losses = {k: round(v, 6) for k, v in avg.items()}
        record = {
            "step": step,
            "epoch": state.epochs_done(run.batches_per_epoch),
            "lr": lr,
            **state.last_losses,
            "images_per_s": round(state.window_images * ctx.world_size / max(elapsed, 1e-9), 2),
            "skipped": state.skipped,
        }
        if run.metrics is not None:
            run.metrics.write(record)
            log.info("step %d/%d  %s", step, run.total_steps, _fmt_losses(state.last_losses, lr))
        state.window, state.window_n, state.window_images, state.window_start = {}, 0, 0, time.time()
    if run.progress is not None:
        run.progress.update(step, _fmt_losses(state.last_losses, lr) if state.last_losses else f"lr {lr:.2e}")


# -- evaluation and checkpoints --------------------------------------------------------------------


def _evaluate(run: _Run) -> dict[str, Any] | None:
    """mAP / F1 on the val split (rank 0 runs it; the others wait)."""
    return _validate(
        run.model,
        run.val_records,
        run.names,
        run.plan.vocabulary,
        run.preprocessing,
        run.ctx,
        run.options,
        run.amp_dtype,
        run.id_names,
    )


def _save(run: _Run, state: _State, target: Path, *, with_state: bool) -> None:
    """The model as a weights folder at ``target``; with ``with_state`` also what ``--resume`` needs."""
    from ..weights_format import save_weights

    sd = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    prov = {
        **run.provenance,
        "steps": state.step,
        "epoch": state.epochs_done(run.batches_per_epoch),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    save_weights(
        target,
        state_dict=sd,
        config=run.config,
        vocabulary=run.plan.vocabulary,
        preprocessing=run.preprocessing,
        provenance=prov,
    )
    if with_state:
        resume = {
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
            "rng": _rng_state(),
            "options": json.dumps(run.options.to_dict()),
        }
        with atomic_path(target / STATE_FILE) as tmp:
            torch.save(resume, tmp)


def _checkpoint(run: _Run, state: _State) -> None:
    """A resumable checkpoint at ``checkpoints/step-N``; only the newest ``keep_checkpoints`` stay."""
    target_dir = run.out / CHECKPOINTS / f"step-{state.step:08d}"
    _save(run, state, target_dir, with_state=True)
    state.checkpoints.append(target_dir)
    for old in _checkpoint_dirs(run.out)[: -max(1, run.options.keep_checkpoints)]:
        shutil.rmtree(old, ignore_errors=True)


def _is_finetune(options: TrainOptions, resume_from: Path | None) -> bool:
    return resume_from is not None or (options.init is not None and not options.init.startswith("timm:"))


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    from .evaluate import autocast_dtype

    return autocast_dtype(precision, device)


def _validate(
    model: nn.Module,
    records: list[Record],
    names: list[str],
    vocab: Vocabulary,
    pre: Preprocessing,
    ctx: DistContext,
    options: TrainOptions,
    amp_dtype: torch.dtype | None,
    id_names: list[str] | None,
) -> dict[str, Any] | None:
    """mAP / F1 on the val split (rank 0 runs it; the others wait)."""
    result = None
    if ctx.is_main:
        from .evaluate import score_records
        from .metrics import split_metrics

        targets = build_targets(records, names, id_names=id_names)
        transform = ViewTransform.for_weights(pre)
        scores, y, skipped = score_records(
            model,
            records,
            targets.positives,
            len(names),
            transform,
            device=ctx.device,
            batch_size=options.batch_size,
            num_workers=0,
            amp_dtype=amp_dtype,
            exif_orientation=options.exif_orientation,
        )
        m = split_metrics("val", names, scores, y, torch.tensor(vocab.thresholds), skipped=len(skipped))
        result = {
            "mAP": m.mAP,
            "micro_f1": round(m.micro_f1, 6),
            "macro_f1": round(m.macro_f1, 6),
            "images": m.images,
        }
    barrier(ctx)
    return result


# -- dry run ---------------------------------------------------------------------------------------


@dataclass
class DryRunReport:
    """What ``ramtag train --dry-run`` found: the parsed tags, without loading any model."""

    images: int  # usable records
    splits: dict[str, int]  # records per split
    num_tags: int  # vocabulary size
    new_tags: list[str]  # tags that would get new label embeddings
    tag_counts: list[tuple[str, int]]  # (tag, images), most frequent first
    samples: list[dict[str, Any]]  # first records: image, captions, tags found
    untagged: int  # records without any tag
    unknown_tags: dict[str, int]  # explicit tags not in the vocabulary
    problems: list[str]  # skipped entries

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dry_run(options: TrainOptions, *, samples: int = 20) -> DryRunReport:
    """Parse the data and tags as :func:`train` would and report, without loading any weights.

    The vocabulary is the init weights' (their ``ramtag.json`` only) or ``--base-tags``, with ``--tags``
    applied like in training.
    """
    base_vocab = _dry_run_vocabulary(options)
    plan = _plan_vocabulary(base_vocab, options)
    records: RecordSet = load_data(options.data, image_root=options.image_root)
    names = list(plan.vocabulary.names)
    from .evaluate import official_id_names
    from .parse import TagParser

    parser = TagParser(names)
    targets = build_targets(records.records, names, parser=parser, id_names=official_id_names(names))
    counts = targets.counts(names)
    shown = []
    for r, pos, found in list(zip(records.records, targets.positives, targets.parsed, strict=True))[:samples]:
        shown.append(
            {
                "image": str(r.image),
                "split": r.split,
                "captions": list(r.captions),
                "parsed_tags": [names[i] for i in found],
                "tags": [names[i] for i in pos],
            }
        )
    splits: dict[str, int] = {}
    for r in records.records:
        splits[r.split or "train"] = splits.get(r.split or "train", 0) + 1
    return DryRunReport(
        images=len(records.records),
        splits=splits,
        num_tags=len(names),
        new_tags=list(plan.new),
        tag_counts=counts.most_common(),
        samples=shown,
        untagged=targets.untagged,
        unknown_tags=dict(targets.unknown_tags),
        problems=list(records.problems),
    )


def _dry_run_vocabulary(options: TrainOptions) -> Vocabulary | None:
    init = options.init
    if init is None or init.startswith("timm:"):
        return None
    path = Path(init).expanduser()
    if path.is_file():
        if options.base_tags is not None:
            return Vocabulary.from_files(options.base_tags, options.base_thresholds)
        from .. import hub
        from ..registry import DEFAULT_WEIGHTS, WEIGHTS

        spec = WEIGHTS[DEFAULT_WEIGHTS]
        return Vocabulary.from_files(hub.fetch_url(spec.tag_list), hub.fetch_url(spec.thresholds))
    from ..weights import resolve_weights
    from ..weights_format import META_FILE

    directory = resolve_weights(init)
    meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    return Vocabulary.from_dict(meta["vocabulary"])


def iter_checkpoints(out: str | Path) -> Iterator[Path]:
    """The resumable checkpoints of a run, oldest first."""
    yield from _checkpoint_dirs(Path(out))
