"""``ramtag eval``: mAP and P/R/F1 of weights on labelled images (``ramtag.training.evaluate``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import AUTO_PRECISION, Device, Precision, examples, setup_logging, show
from .flags import INPUTS, MODEL, DeviceFlag, ExifOrientation, Verbose, Weights

EXAMPLES = examples(
    "ramtag eval --data test.jsonl --weights my-ram",
    "ramtag eval --data val=val.jsonl --data test=test.jsonl --weights my-ram --calibrate",
    "ramtag eval --data photos/ --weights my-ram --json > report.json",
)


def eval_(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            rich_help_panel=INPUTS,
            metavar="[NAME=]PATH",
            help="Captioned/tagged images (as for train); repeat it; 'NAME=PATH' names a split "
            "(val=..., test=...).",
        ),
    ],
    weights: Weights = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--no-json", rich_help_panel="Report", help="Print the report as JSON (per tag too)."
        ),
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibrate",
            rich_help_panel="Report",
            help="Fit per-tag thresholds (best F1) on the validation split and save them into the weights.",
        ),
    ] = False,
    calibrate_split: Annotated[
        str,
        typer.Option("--calibrate-split", rich_help_panel="Report", help="The split --calibrate fits on."),
    ] = "val",
    worst: Annotated[
        int, typer.Option("--worst", rich_help_panel="Report", help="List this many worst tags per split.")
    ] = 10,
    min_positives: Annotated[
        int,
        typer.Option(
            "--min-positives",
            rich_help_panel="Report",
            help="Worst tags: only tags with this many positives.",
        ),
    ] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", rich_help_panel=MODEL, min=1, help="Images per forward pass.")
    ] = 16,
    device: DeviceFlag = Device.auto,
    precision: Annotated[
        Precision,
        typer.Option("--precision", rich_help_panel=MODEL, help="auto: bf16 on CUDA, fp32 elsewhere."),
    ] = AUTO_PRECISION,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            rich_help_panel=INPUTS,
            min=0,
            help="Decode processes.",
            show_default="min(4, cores)",
        ),
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(
            "--image-root",
            rich_help_panel=INPUTS,
            metavar="DIR",
            help="Base folder of the official json's image_path.",
            show_default="none",
        ),
    ] = None,
    exif_orientation: ExifOrientation = True,
    verbose: Verbose = False,
) -> None:
    """Evaluate weights on labelled images: mAP, precision/recall/F1 per split and per tag."""
    from .. import training
    from .render import eval_report

    setup_logging(verbose)
    report = training.evaluate(
        training.EvalOptions(
            data=data,
            weights=weights,
            batch_size=batch_size,
            device=device.value,
            precision=precision.value,
            num_workers=workers,
            image_root=image_root,
            calibrate=calibrate,
            calibrate_split=calibrate_split,
            worst=worst,
            min_positives=min_positives,
            exif_orientation=exif_orientation,
        )
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(per_tag=True), ensure_ascii=False, indent=2) + "\n")
    else:
        show(eval_report(report))
