"""``ramtag train``: a recipe + ``--set key=value`` overrides + the common flags -> ``training.train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import Device, Precision, examples, out, setup_logging, show, value
from .flags import Verbose

EXAMPLES = examples(
    "ramtag train --data photos/ --init ram-plus-swin-l-14m --tags my_tags.txt --dry-run",
    "ramtag train --recipe train/finetune_new_tags.toml --data photos/ --tags my.txt --out my-ram",
    "ramtag train --recipe train/finetune_384.toml --data d.jsonl --out big --set grad_accum=2",
)
RUN, OPT = "Training", "Optimisation"


def train(
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            metavar="FILE",
            help="A recipe (TOML/JSON; keys = TrainOptions fields), e.g. train/finetune_new_tags.toml.",
            show_default="none: TrainOptions' defaults",
            rich_help_panel=RUN,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Any TrainOptions field, over the recipe (repeat it): --set grad_checkpointing=true "
            "--set image_size=224. Unknown keys and bad values are refused.",
            show_default="none",
            rich_help_panel=RUN,
        ),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            metavar="[val=]PATH",
            help="Captioned images: a JSONL/CSV file, a folder of images with .txt captions, or the official "
            "RAM json; repeat it; 'val=PATH' marks a validation split.",
            show_default="the recipe's",
            rich_help_panel=RUN,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Result folder (usable as --weights).",
            show_default="the recipe's",
            rich_help_panel=RUN,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            metavar="WEIGHTS",
            help="Fine-tune from weights (ram-plus-swin-l-14m, a weights folder, an official .pth) or start "
            "a backbone from timm:<swin name>.",
            show_default="the recipe's, else random weights (--set arch=...)",
            rich_help_panel=RUN,
        ),
    ] = None,
    tags: Annotated[
        Path | None,
        typer.Option(
            "--tags",
            metavar="FILE",
            help="Your tag list (one per line, 'tag=0.6').",
            show_default="the init weights' tags",
            rich_help_panel=RUN,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--no-dry-run",
            help="Print the tags parsed from the captions and their counts; train nothing.",
            rich_help_panel=RUN,
        ),
    ] = False,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from the newest checkpoint in --out.",
            show_default="the recipe's, else no",
            rich_help_panel=RUN,
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(
            "--epochs", help="Passes over the data.", show_default="the recipe's, else 2", rich_help_panel=OPT
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            min=1,
            help="Optimizer steps (instead of --epochs).",
            show_default="none",
            rich_help_panel=OPT,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per process per micro-batch.",
            show_default="the recipe's, else 8",
            rich_help_panel=OPT,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak learning rate.",
            show_default="the recipe's, else 5e-6 fine-tuning RAM++, 1e-4 otherwise",
            rich_help_panel=OPT,
        ),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision",
            help="auto: bf16 autocast on GPUs that support it, fp32 elsewhere.",
            show_default="the recipe's, else auto",
            rich_help_panel=OPT,
        ),
    ] = None,
    device: Annotated[
        Device | None,
        typer.Option(
            "--device",
            help="auto: CUDA, then MPS, then CPU (cuda:LOCAL_RANK under torchrun).",
            show_default="auto",
            rich_help_panel=OPT,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Data-loading processes.",
            show_default="min(4, cores)",
            rich_help_panel=OPT,
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Train or fine-tune RAM++ on your captioned photos (single GPU, CPU, or torchrun for many).

    Every TrainOptions field can be set in the --recipe file or with --set KEY=VALUE (the flags below
    are the common ones; see train/README.md for all of them). Precedence: recipe < --set < flags.
    """
    from .. import training
    from .progress import TrainBar
    from .render import dry_run_report, train_result

    setup_logging(verbose)
    flags: dict[str, Any] = {
        "data": data or None,
        "out": out_dir,
        "init": init,
        "tags": tags,
        "resume": resume,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "lr": lr,
        "precision": value(precision),
        "device": value(device),
        "num_workers": workers,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    sets = training.parse_set(overrides or ())
    both = sorted(set(flags) & set(sets))
    if both:
        raise UsageError(f"{both[0]} is given both as a flag and with --set; keep one of them")
    merged = sets | flags
    if dry_run:
        merged.setdefault("out", Path("."))  # a dry run writes nothing
    opts = training.options_from_recipe(recipe, **merged)
    if dry_run:
        show(dry_run_report(training.dry_run(opts)))
        return
    show(train_result(training.train(opts, progress=TrainBar())), out)
