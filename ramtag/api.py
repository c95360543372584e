"""The public Python API and the one place that wires the stages together.

    discover -> decode -> batch -> model -> decide tags -> write

``load_tagger`` loads weights (downloading the default on first use), optional open-set tags, and
prepares the vocabulary once; ``Tagger.tag`` yields :class:`ImageTags` for paths or PIL images;
``tag_library`` is what ``ramtag tag`` runs: it adds incremental state, a writer thread that overlaps
writing with compute, torchrun sharding and a summary.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RamtagError, UsageError
from .results import ImageTags, TagScore
from .tags import Vocabulary, decide, effective_thresholds

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .runner import Runner
    from .weights_format import LoadedWeights, Preprocessing

log = logging.getLogger(__name__)

__all__ = [
    "ImageTags",
    "OpenSetOptions",
    "RunSummary",
    "TagOptions",
    "TagScore",
    "Tagger",
    "WriteOptions",
    "load_tagger",
    "tag_library",
]


@dataclass
class OpenSetOptions:
    """Open-set tags to add to (or use instead of) the built-in vocabulary."""

    tags: str | None = None  # comma-separated, e.g. "corgi,meteor shower=0.6"
    tags_file: Path | None = None  # one tag per line, '#' comments, optional '=threshold'
    only_open_set: bool = False  # score only the open-set tags
    threshold: float = 0.5  # default threshold for open-set tags (the official choice)
    descriptions: Path | None = None  # official-format descriptions JSON instead of asking an LLM
    clip: Path | None = None  # local CLIP ViT-B/16 in OpenAI state-dict format
    llm_base_url: str | None = None  # OpenAI-compatible server, e.g. http://localhost:11434/v1
    llm_model: str | None = None  # model name on that server
    llm_api_key: str | None = None  # API key (never logged or cached)
    require_llm: bool = False  # error instead of falling back to CLIP prompt templates

    @property
    def requested(self) -> bool:
        """True when any open-set tag is asked for (a descriptions file alone asks for all its tags)."""
        return bool(self.tags or self.tags_file or self.descriptions)


@dataclass
class TagOptions:
    """How to decide and which inputs to take."""

    threshold: float | None = None  # replaces every built-in tag's threshold
    top_k: int | None = None  # at most this many tags per image
    all_scores: bool = False  # also report every tag's score
    lang: str = "en"  # "en" or "zh": the tag names to write
    batch_size: int | None = None  # None: sized by the runner for the device
    workers: int | None = None  # decode processes; None: 0 on CPU (decoder threads), else min(4, CPUs)
    exif_orientation: bool = True  # rotate by EXIF orientation before tagging (official code does not)
    recursive: bool = True  # walk folders recursively
    include_hidden: bool = False  # also take dot-files and dot-folders
    draft: bool = False  # JPEG draft-mode decoding (faster, not bit-exact)
    decode: str = "auto"  # JPEG decoding: "gpu" (nvJPEG), "cpu" (Pillow), "auto" (gpu on CUDA when available)


@dataclass
class WriteOptions:
    """Where the tags go (see ``ramtag.writers``)."""

    mode: str = "xmp"  # xmp | embed | json | none
    json_path: Path | None = None  # JSON Lines file (also written next to other modes when given)
    sidecar_name: str = "ext"  # ext (photo.jpg.xmp) | replace (photo.xmp)
    hierarchy_root: str = "ramtag"  # parent of lr:hierarchicalSubject / digiKam:TagsList; "" for flat
    dry_run: bool = False  # show what would be written, write nothing
    backup: bool = True  # embed mode: keep exiftool's *_original backup
    repair_sidecars: bool = False  # replace invalid sidecars, keeping them as *.bak


@dataclass
class RunSummary:
    """What ``tag_library`` did."""

    found: int = 0  # image files found
    tagged: int = 0  # images run through the model
    unchanged: int = 0  # images skipped because they were tagged before with the same settings
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    written: int = 0  # sidecars / files written or updated
    seconds: float = 0.0  # wall time of the run
    notes: list[str] = field(default_factory=list)  # one-line notes for the user

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


EXACT_PRECISIONS = ("fp32", "bf16-checked")  # precisions that decide the fp32 tags


class Tagger:
    """A loaded RAM++ model with its vocabulary, ready to tag.

    Build it with :func:`load_tagger`. ``tag`` accepts file paths and/or ``PIL.Image`` objects and
    yields one :class:`ImageTags` per input, in input order.
    """

    def __init__(
        self,
        loaded: LoadedWeights,
        *,
        vocabulary: Vocabulary,
        label_embed: torch.Tensor,
        runner: Runner,
        name: str,
        open_set_notes: Sequence[str] = (),
    ) -> None:
        from .preprocess import make_transform

        self.loaded = loaded
        self.vocabulary = vocabulary  # the tags scored, in output order (built-in and/or open-set)
        self.label_embed = label_embed  # (T, 51, 512) float32 description embeddings
        self.runner = runner
        self.name = name  # weights name or directory
        self.preprocessing: Preprocessing = loaded.preprocessing
        self.transform = make_transform(loaded.preprocessing)
        self.notes = list(open_set_notes)

    def __repr__(self) -> str:
        return f"Tagger({self.name!r}, tags={len(self.vocabulary)}, {self.runner.describe()})"

    def settings(self, options: TagOptions) -> dict[str, Any]:
        """Everything that changes the tags of an image (keys the incremental state)."""
        import hashlib

        vocab_hash = hashlib.sha256(repr(self.vocabulary.to_dict()).encode()).hexdigest()[:16]
        # The built-in rows come from the weights file (its sha256 covers them); hash only open-set rows.
        open_rows = [i for i, flag in enumerate(self.vocabulary.open_set) if flag]
        emb = self.label_embed[open_rows] if open_rows else self.label_embed[:0]
        emb_hash = hashlib.sha256(emb.float().cpu().numpy().tobytes()).hexdigest()[:16]
        files = self.loaded.metadata.get("files", {})
        weights_sha = next((f.get("sha256", "") for f in files.values() if isinstance(f, dict)), "")
        return {
            "weights": self.name,
            "weights_sha": weights_sha,
            "vocabulary": vocab_hash,
            "label_embed": emb_hash,
            "threshold": options.threshold,
            "top_k": options.top_k,
            "lang": options.lang,
            "exif_orientation": options.exif_orientation,
            "draft": options.draft,
            # GPU decoding moves pixels by a few levels; keyed only when used, so CPU keys stay as they were.
            **({"decode": "gpu"} if self._decode(options) == "gpu" else {}),
            "preprocessing": repr(self.preprocessing),
            # fp32 and bf16-checked decide the same tags; plain bf16/fp16 may differ near thresholds.
            "decisions": "exact" if self.runner.precision in EXACT_PRECISIONS else self.runner.precision,
        }

    def _decode(self, options: TagOptions) -> str:
        """``options.decode`` resolved on this tagger's device: "cpu" or "gpu"."""
        from .gpu_decode import resolve_decode

        return resolve_decode(options.decode, self.runner.device)

    # ------------------------------------------------------------------ tagging
    def scores(self, images: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Scores for a preprocessed batch.

        Args:
            images: (B, 3, S, S) float32, normalised as ``self.preprocessing`` says.
            threshold: the override you will decide with (``TagOptions.threshold``): under
                ``bf16-checked`` the scores near these thresholds are the fp32 ones.
        Returns:
            (B, T) float32 sigmoid scores in [0, 1], columns in ``self.vocabulary`` order.
        """
        import torch

        th = torch.from_numpy(effective_thresholds(self.vocabulary, threshold))  # (T,) float64
        return self.runner.scores(images, th)

    def _results(
        self, scores: torch.Tensor, paths: Sequence[Path | None], indices: Sequence[int], options: TagOptions
    ) -> list[ImageTags]:
        arr = scores.float().numpy()
        decided = decide(arr, self.vocabulary, threshold=options.threshold, top_k=options.top_k)
        out = []
        for row, (path, idx, tags) in enumerate(zip(paths, indices, decided, strict=True)):
            all_scores = None
            if options.all_scores:
                all_scores = {n: float(s) for n, s in zip(self.vocabulary.names, arr[row], strict=True)}
            out.append(ImageTags(path=path, tags=tags, scores=all_scores, index=idx))
        return out

    def tag(
        self, items: Iterable[str | Path | Image.Image], options: TagOptions | None = None, **kwargs: Any
    ) -> Iterator[ImageTags]:
        """Tag images given as paths and/or PIL images; yields one result per item, in input order.

        A file that cannot be decoded yields an ``ImageTags`` with ``error`` set (no exception).
        Keyword arguments override fields of ``options`` (e.g. ``threshold=0.7``).
        """
        from PIL import Image as PILImage

        from .batch import make_batches

        opts = _with(options or TagOptions(), kwargs)
        items = [x if isinstance(x, PILImage.Image) else Path(x) for x in items]
        if not items:
            return
        in_memory = any(isinstance(x, PILImage.Image) for x in items)
        loader = make_batches(
            items,
            self.transform,
            batch_size=opts.batch_size or self.runner.suggest_batch_size(),
            workers=0 if in_memory else _workers(opts.workers, len(items), self.runner.device.type),
            threads=1 if in_memory else None,  # one thread: the caller's image objects are never shared
            pin_memory=self.runner.pin_memory,
            exif_orientation=opts.exif_orientation,
            draft_size=self.preprocessing.image_size if opts.draft else None,
            decode=self._decode(opts),
            device=self.runner.device,
        )
        for batch in loader:
            results = [ImageTags(path=path, error=reason, index=idx) for idx, path, reason in batch.failures]
            if len(batch.indices):
                scores = self.scores(batch.images, opts.threshold)
                results += self._results(scores, batch.paths, batch.indices, opts)
            yield from sorted(results, key=lambda r: r.index)


def _with(options: TagOptions, overrides: dict[str, Any]) -> TagOptions:
    import dataclasses

    unknown = set(overrides) - {f.name for f in dataclasses.fields(TagOptions)}
    if unknown:
        raise UsageError(f"unknown tagging option(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(options, **overrides)


def _workers(workers: int | None, n: int, device_type: str) -> int:
    """Decode processes: as asked, else none for a couple of images, else ``default_workers``."""
    if workers is not None:
        return max(0, workers)
    if n <= 2:
        return 0
    from .batch import default_workers

    return default_workers(device_type)


def load_tagger(
    weights: str | Path | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    open_set: OpenSetOptions | None = None,
    compile: bool = False,
    download: bool = True,
) -> Tagger:
    """Load weights (a registry name, a ramtag weights directory, or None for the default) and
    prepare the vocabulary (built-in and optional open-set tags) on ``device``.

    The default weights are downloaded on first use unless ``download=False`` or offline.
    """
    from .runner import Runner
    from .weights import resolve_weights
    from .weights_format import build_model, load_weights

    directory = resolve_weights(weights, download=download)
    loaded = load_weights(directory)
    model = build_model(loaded)
    vocabulary = loaded.vocabulary
    label_embed = model.builtin_label_embed().detach()  # (T, 51, 512)
    notes: list[str] = []
    if open_set is not None and open_set.requested:
        vocabulary, label_embed, notes = _add_open_set(vocabulary, label_embed, open_set)
    elif open_set is not None and open_set.only_open_set:
        raise UsageError("--only-open-set needs open-set tags: pass --open-set or --open-set-file")
    from .distributed import init_if_needed
    from .runner import select_device

    # Under torchrun every rank joins the process group and takes its own GPU (cuda:LOCAL_RANK).
    runner = Runner(
        model,
        label_embed,
        device=init_if_needed(select_device(device)),
        precision=precision,
        compile=compile,
    )
    name = str(weights) if weights is not None else directory.name
    return Tagger(
        loaded, vocabulary=vocabulary, label_embed=label_embed, runner=runner, name=name, open_set_notes=notes
    )


def _add_open_set(
    vocabulary: Vocabulary, label_embed: torch.Tensor, opts: OpenSetOptions
) -> tuple[Vocabulary, torch.Tensor, list[str]]:
    import torch

    from .text.llm import LLMSettings
    from .text.openset import OpenSetTag, build_open_set, combine, parse_open_set

    tags = parse_open_set(opts.tags, opts.tags_file, default_threshold=opts.threshold)
    if not tags and opts.descriptions is not None:  # a descriptions file alone: tag with all its tags
        from .text.describe import load_descriptions

        tags = [OpenSetTag(name, opts.threshold) for name in load_descriptions(opts.descriptions)]
    llm = LLMSettings.from_env(base_url=opts.llm_base_url, model=opts.llm_model, api_key=opts.llm_api_key)
    built = build_open_set(
        tags,
        descriptions_file=opts.descriptions,
        clip_file=opts.clip,
        llm=llm,
        require_llm=opts.require_llm,
        vocabulary=vocabulary,
    )
    vocab, embed = combine(vocabulary, label_embed, built, only_open_set=opts.only_open_set)
    notes = [f"{t!r} is a built-in tag; using the built-in one" for t in built.reused_builtin]
    return vocab, torch.as_tensor(embed, dtype=torch.float32), notes


# ---------------------------------------------------------------------- library runs
ProgressFn = Callable[[str, int, int], None]  # (event, done, total); events: "discovered", "image", "written"
ResultFn = Callable[[ImageTags], None]


def tag_library(
    paths: Sequence[str | Path],
    tagger: Tagger,
    *,
    options: TagOptions | None = None,
    write: WriteOptions | None = None,
    force: bool = False,
    use_state: bool = True,
    state_db: Path | None = None,
    progress: ProgressFn | None = None,
    on_result: ResultFn | None = None,
    on_write: Callable[[Any], None] | None = None,
) -> RunSummary:
    """Tag every image under ``paths`` and write the tags; what ``ramtag tag`` runs.

    Skips files tagged before with the same settings (unless ``force``), overlaps writing with
    compute on a writer thread, shards the file list across torchrun ranks, and never stops on a
    bad file: each failure is counted in the summary with a one-line reason.
    """
    from .discover import Skipped, discover
    from .distributed import dist_info, shard
    from .writers import make_writer

    opts = options or TagOptions()
    wopts = write or WriteOptions()
    t0 = time.perf_counter()
    summary = RunSummary()
    rank, world, _ = dist_info()

    files: list[Path] = []
    for item in discover(paths, recursive=opts.recursive, include_hidden=opts.include_hidden):
        if isinstance(item, Skipped):
            summary.failed.append((str(item.path), item.reason))
        else:
            files.append(item)
    summary.found = len(files)
    if world > 1:
        files = shard(files, rank, world)
    if progress:
        progress("discovered", 0, len(files))

    json_path = wopts.json_path
    if world > 1 and json_path is not None:
        json_path = json_path.with_name(f"{json_path.name}.rank{rank}")
    if wopts.mode == "json" and json_path is None:
        json_path = Path("ramtag-tags.jsonl")

    state = None
    key = ""
    if use_state and not wopts.dry_run and wopts.mode != "none":
        from .state import StateDB, settings_key

        state = StateDB(state_db) if state_db else StateDB()
        key = settings_key(
            **tagger.settings(opts),
            write_mode=wopts.mode,
            json=str(json_path or ""),
            sidecar_name=wopts.sidecar_name,
            hierarchy_root=wopts.hierarchy_root,
        )
        files, summary.unchanged = state.filter(files, key, force=force)

    writer = make_writer(
        wopts.mode,
        sidecar_name=wopts.sidecar_name,
        hierarchy_root=wopts.hierarchy_root,
        lang=opts.lang,
        dry_run=wopts.dry_run,
        backup=wopts.backup,
        repair_sidecars=wopts.repair_sidecars,
        json_path=json_path,
        all_scores=opts.all_scores,
        model=tagger.name,
    )
    work: queue.Queue[ImageTags | None] = queue.Queue(maxsize=256)
    write_errors: list[tuple[str, str]] = []

    def writer_loop() -> None:
        while True:
            res = work.get()
            if res is None:
                return
            try:
                outcome = writer.write(res)
                if on_write is not None:
                    on_write(outcome)
                if res.ok and outcome.action == "skipped":
                    write_errors.append((str(res.path), outcome.message))
                    continue
                if res.ok:
                    summary.written += outcome.action in ("written", "fallback-sidecar")
                    if outcome.action == "fallback-sidecar" and outcome.message:
                        summary.notes.append(outcome.message)
                    if state is not None and res.path is not None:
                        state.mark_done(res.path, None, key)
            except RamtagError as e:
                write_errors.append((str(res.path), str(e)))
            except Exception as e:  # a writer bug must not lose the rest of the run
                log.exception("writing %s failed", res.path)
                write_errors.append((str(res.path), f"writing failed: {e}"))
            finally:
                if progress:
                    progress("written", 1, 0)

    thread = threading.Thread(target=writer_loop, name="ramtag-writer", daemon=True)
    thread.start()
    try:
        for done, res in enumerate(tagger.tag(files, opts), 1):
            if res.ok:
                summary.tagged += 1
            else:
                summary.failed.append((str(res.path), res.error or "failed"))
            if on_result:
                on_result(res)
            work.put(res)
            if progress:
                progress("image", done, len(files))
    finally:
        work.put(None)
        thread.join()
        writer.close()
        if state is not None:
            state.close()
    summary.failed.extend(write_errors)
    if world > 1 and wopts.json_path is not None:
        from .distributed import gather_jsonl

        gather_jsonl(wopts.json_path, world)
    summary.notes = list(dict.fromkeys(tagger.notes + summary.notes))
    summary.seconds = time.perf_counter() - t0
    if tagger.runner.checked:
        st = tagger.runner.recheck_stats
        log.info(
            "bf16-checked: %d of %d images had tags within %.3g logit of a threshold, re-decided in fp32 "
            "(%d pairs, %.1f s; largest bf16 error %.3g logit)",
            st.rechecked_images, st.images, st.margin, st.rechecked_pairs, st.seconds, st.max_error,
        )
    return summary


def untag(
    paths: Sequence[str | Path], *, sidecars_only: bool = False, dry_run: bool = False, backup: bool = True
) -> Iterator[Any]:
    """Remove exactly the tags ramtag wrote (sidecars, and embedded tags where exiftool is installed).

    Yields one ``ramtag.writers.WriteOutcome`` per sidecar or image touched; ``action == "skipped"``
    carries a one-line reason.
    """
    from .writers import untag_paths

    yield from untag_paths(paths, embedded=False if sidecars_only else None, dry_run=dry_run, backup=backup)


def describe(
    tags: str,
    *,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    use_cache: bool = True,
) -> dict[str, list[str]]:
    """51 descriptions per tag from the configured LLM (cached), as ``ramtag describe`` shows them.

    ``tags`` is comma-separated like ``--open-set`` (thresholds are ignored here).
    """
    from .text.llm import LLMSettings
    from .text.openset import describe_tags, parse_open_set

    names = [t.name for t in parse_open_set(tags, None)]
    if not names:
        raise UsageError('no tags given; e.g. ramtag describe "corgi,meteor shower"')
    llm = LLMSettings.from_env(base_url=llm_base_url, model=llm_model, api_key=llm_api_key)
    return describe_tags(names, llm, use_cache=use_cache)


def benchmark(**options: Any) -> dict[str, Any]:
    """Run the speed benchmark (``ramtag bench``); keyword arguments are ``ramtag.bench.BenchOptions`` fields.

    Returns the report dict that is also written as JSON (its path under ``"out"``).
    """
    from .bench import BenchOptions, run_benchmark

    return run_benchmark(BenchOptions(**options))
