"""Every flag that more than one command has, and ``ramtag tag``'s, declared once: help text, panel and
default as shown in ``--help``. A command takes a flag by its alias (``weights: Weights = None``).

A flag of ``ramtag tag`` is named after its settings field (``ramtag.settings``) where it can be:
``tag --threshold`` is ``tag.threshold``; ``tag.FLAG_KEYS`` lists the others. Flags that mean something
else in another command (train's ``--batch-size``, bench's ``--threshold``) are declared there.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from ..writers import WRITERS
from .common import Device, Lang, SidecarName, TagPrecision, WriteMode

OUTPUT, TAGS, OPEN, MODEL, INPUTS = "Output", "Tags", "Open-set", "Model", "Inputs"  # the help panels

# -- general ----------------------------------------------------------------------------------------

Verbose = Annotated[
    bool, typer.Option("--verbose/--no-verbose", "-v", help="Debug logging; tracebacks of errors.")
]
Quiet = Annotated[bool, typer.Option("--quiet/--no-quiet", "-q", help="No per-image lines or progress bar.")]
Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Settings file (TOML): sections model, tag, write and open_set, keyed by option name "
        "(top_k, hierarchy_root, tags...); see the README. Flags given here win over it.",
        show_default="none",
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="SECTION.KEY=VALUE",
        help="One setting over the --config file (repeat it), e.g. --set tag.top_k=10 --set "
        "write.hierarchy_root=people; values are TOML (0.5, true, a list, a {table}) or plain text.",
        show_default="none",
    ),
]

# -- output -----------------------------------------------------------------------------------------

Write = Annotated[
    WriteMode,
    typer.Option(
        "--write",
        help="Where tags go: " + "; ".join(f"{k}: {e.help}" for k, e in WRITERS.items()) + ".",
        rich_help_panel=OUTPUT,
    ),
]
JsonFile = Annotated[
    Path | None,
    typer.Option(
        "--json",
        metavar="FILE",
        help="Also write JSON Lines (one object per image) to FILE; '-' for stdout.",
        show_default="none",
        rich_help_panel=OUTPUT,
    ),
]
AllScores = Annotated[
    bool,
    typer.Option(
        "--all-scores/--no-all-scores", help="Put every tag's score in the JSON.", rich_help_panel=OUTPUT
    ),
]
SidecarNameFlag = Annotated[
    SidecarName,
    typer.Option(
        "--sidecar-name",
        help="ext: photo.jpg.xmp (digiKam, darktable, Immich); replace: photo.xmp (Adobe).",
        rich_help_panel=OUTPUT,
    ),
]
HierarchyRoot = Annotated[
    str,
    typer.Option(
        "--hierarchy-root",
        help="Parent of hierarchical keywords (ramtag|dog); '' for flat.",
        rich_help_panel=OUTPUT,
    ),
]
LangFlag = Annotated[Lang, typer.Option("--lang", help="Tag names to write.", rich_help_panel=OUTPUT)]
TagDryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run/--no-dry-run",
        help="Show, once per image, what would be written (or why nothing would); write nothing.",
        rich_help_panel=OUTPUT,
    ),
]
Backup = Annotated[
    bool,
    typer.Option(
        "--backup/--no-backup",
        help="When exiftool changes a file's embedded tags (--write embed, untag): keep its *_original copy.",
        rich_help_panel=OUTPUT,
    ),
]


def _in_panel(alias: Any, panel: str | None) -> Any:
    """A flag's declaration shown in another help panel (None: the command's plain Options)."""
    info = copy.copy(typing.get_args(alias)[1])
    info.rich_help_panel = panel
    return info


UntagBackup = Annotated[bool, _in_panel(Backup, None)]  # untag has no panels
RepairSidecars = Annotated[
    bool,
    typer.Option(
        "--repair-sidecars/--no-repair-sidecars",
        help="Replace sidecars that are not valid XML, keeping the old file as *.bak.",
        rich_help_panel=OUTPUT,
    ),
]

# -- tags -------------------------------------------------------------------------------------------

Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="One threshold for every built-in tag instead of the per-tag ones.",
        show_default="the weights' per-tag thresholds",
        rich_help_panel=TAGS,
    ),
]
TopK = Annotated[
    int | None,
    typer.Option(
        "--top-k", min=1, help="At most K tags per image.", show_default="no limit", rich_help_panel=TAGS
    ),
]

Rename = Annotated[
    list[str] | None,
    typer.Option(
        "--rename",
        metavar="OLD=NEW",
        help="Write tag OLD (its English name in `ramtag tags`) as NEW, whatever --lang; 'OLD=' never "
        "writes it. Repeatable; several OLDs may share one NEW.",
        show_default="none",
        rich_help_panel=TAGS,
    ),
]
RenameFile = Annotated[
    Path | None,
    typer.Option(
        "--rename-file",
        metavar="FILE",
        help="Renames, one 'old = new' (or old<TAB>new) per line; lines starting with '#' are comments.",
        show_default="none",
        rich_help_panel=TAGS,
    ),
]

# -- open-set ---------------------------------------------------------------------------------------

OpenSet = Annotated[
    str | None,
    typer.Option(
        "--open-set",
        metavar="TAGS",
        help="Extra tags, comma-separated; 'tag=0.6' sets a threshold.",
        show_default="none",
        rich_help_panel=OPEN,
    ),
]
OpenSetFile = Annotated[
    Path | None,
    typer.Option(
        "--open-set-file",
        metavar="FILE",
        help="Extra tags, one per line ('#' comments).",
        show_default="none",
        rich_help_panel=OPEN,
    ),
]
OnlyOpenSet = Annotated[
    bool,
    typer.Option(
        "--only-open-set/--no-only-open-set", help="Score only the open-set tags.", rich_help_panel=OPEN
    ),
]
OpenSetThreshold = Annotated[
    float,
    typer.Option(
        "--open-set-threshold",
        min=0.0,
        max=1.0,
        help="Default threshold of open-set tags.",
        rich_help_panel=OPEN,
    ),
]
Descriptions = Annotated[
    Path | None,
    typer.Option(
        "--descriptions",
        metavar="FILE",
        help="Tag descriptions JSON (official format, see `ramtag describe --json`) instead of asking "
        "an LLM.",
        show_default="the cache, then the LLM",
        rich_help_panel=OPEN,
    ),
]
Clip = Annotated[
    Path | None,
    typer.Option(
        "--clip",
        metavar="FILE",
        help="Local CLIP ViT-B/16 weights (OpenAI state-dict format) for open-set text embeddings.",
        show_default="clip-vit-b-16, downloaded once",
        rich_help_panel=OPEN,
    ),
]
LLMBaseURL = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url",
        help="OpenAI-compatible server, e.g. http://localhost:11434/v1 (Ollama). Env: RAMTAG_LLM_BASE_URL.",
        show_default="none: CLIP prompt templates",
        rich_help_panel=OPEN,
    ),
]
LLMModel = Annotated[
    str | None,
    typer.Option(
        "--llm-model",
        help="Model name on that server. Env: RAMTAG_LLM_MODEL.",
        show_default="the server's",
        rich_help_panel=OPEN,
    ),
]
LLMKey = Annotated[
    str | None,
    typer.Option(
        "--llm-api-key",
        envvar="OPENAI_API_KEY",
        show_envvar=True,
        help="API key (prefer the env variable; never logged or cached).",
        show_default="none",
        rich_help_panel=OPEN,
    ),
]
RequireLLM = Annotated[
    bool,
    typer.Option(
        "--require-llm/--no-require-llm",
        help="Fail instead of falling back to CLIP prompt templates when no LLM answers.",
        rich_help_panel=OPEN,
    ),
]

# -- model ------------------------------------------------------------------------------------------

_WEIGHTS_HELP = "Registry name or weights folder (see `ramtag weights list`)."
Weights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        metavar="NAME|DIR",
        help=_WEIGHTS_HELP,
        show_default="ram-plus-swin-l-14m, downloaded on first use",
        rich_help_panel=MODEL,
    ),
]
# `ramtag tags` reads only the tag list of installed or registered weights
WeightsNoDownload = Annotated[
    str | None,
    typer.Option(
        "--weights",
        metavar="NAME|DIR",
        help=_WEIGHTS_HELP.rstrip(".") + "; needs no model download.",
        show_default="ram-plus-swin-l-14m",
    ),
]
DeviceFlag = Annotated[
    Device, typer.Option("--device", help="auto: CUDA, then MPS, then CPU.", rich_help_panel=MODEL)
]
PrecisionFlag = Annotated[
    TagPrecision,
    typer.Option(
        "--precision",
        help="auto: bf16 on GPUs; bf16-checked on CPUs with AMX/AVX512-BF16 (bf16 speed, borderline "
        "tags re-decided in fp32: the fp32 tags); fp32 elsewhere. fp32: exact parity with the "
        "official code. bf16/fp16: fastest, may flip tags that sit on their threshold.",
        rich_help_panel=MODEL,
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Images per forward pass.",
        show_default="sized for the device",
        rich_help_panel=MODEL,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Decode processes; 0 decodes in threads.",
        show_default="0 on CPU, min(4, cores) with a GPU",
        rich_help_panel=MODEL,
    ),
]
Compile = Annotated[
    bool,
    typer.Option("--compile/--no-compile", help="torch.compile the model (GPU).", rich_help_panel=MODEL),
]
Draft = Annotated[
    bool,
    typer.Option(
        "--draft/--no-draft",
        help="Faster JPEG decoding at reduced size (not bit-exact).",
        rich_help_panel=MODEL,
    ),
]
Decode = Annotated[
    str,
    typer.Option(
        "--decode",
        help="JPEG decoding: gpu (nvJPEG), cpu (Pillow), auto (gpu on CUDA when available).",
        rich_help_panel=MODEL,
    ),
]

# -- inputs -----------------------------------------------------------------------------------------

ExifOrientation = Annotated[
    bool,
    typer.Option(
        "--exif-orientation/--no-exif-orientation",
        help="Rotate by EXIF orientation first (--no-...: as the official code does).",
        rich_help_panel=INPUTS,
    ),
]
Hidden = Annotated[
    bool,
    typer.Option("--hidden/--no-hidden", help="Include dot-files and dot-folders.", rich_help_panel=INPUTS),
]
Recursive = Annotated[
    bool,
    typer.Option("--recursive/--no-recursive", help="Descend into sub-folders.", rich_help_panel=INPUTS),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force/--no-force",
        help="Run the model again on images the catalog has scores for.",
        rich_help_panel=INPUTS,
    ),
]
_CATALOG_HELP = "The catalog: what was tagged, every tag's score, what was written where."
Catalog = Annotated[
    Path | None,
    typer.Option(
        "--catalog", metavar="FILE", help=_CATALOG_HELP, show_default="catalog.sqlite in the ramtag cache"
    ),
]
# `ramtag tag` also takes the catalog's old name, --state-db (users' scripts)
TagCatalog = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        "--state-db",
        metavar="FILE",
        help=_CATALOG_HELP,
        show_default="catalog.sqlite in the ramtag cache",
        rich_help_panel=INPUTS,
    ),
]
