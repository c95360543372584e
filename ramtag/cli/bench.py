"""``ramtag bench``: images/s end to end and per stage (``ramtag.api.benchmark``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import AUTO_TAG_PRECISION, Device, examples, out, setup_logging
from .flags import INPUTS, MODEL, BatchSize, Compile, Decode, DeviceFlag, Draft, PrecisionFlag, Workers

EXAMPLES = examples(
    "ramtag bench                                    # Swin-L, 16 generated 4000x3000 JPEGs",
    "ramtag bench --arch tiny --images 8 --size 384  # a quick check",
    "ramtag bench --inputs a.jpg --inputs b.jpg --precision bf16-checked",
)


def _image_size(size: str) -> tuple[int, int]:
    try:
        w, _, h = size.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise UsageError(f"--size {size!r}: use WxH (4000x3000) or one side (384)") from None


def bench(
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            rich_help_panel=MODEL,
            help="Model config with random weights: swin_l_384, swin_b_384, tiny.",
        ),
    ] = "swin_l_384",
    images: Annotated[
        int, typer.Option("--images", rich_help_panel=INPUTS, min=1, help="How many JPEGs to generate.")
    ] = 16,
    size: Annotated[
        str,
        typer.Option("--size", rich_help_panel=INPUTS, help="WxH of the generated JPEGs, or one side (384)."),
    ] = "4000x3000",
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--inputs",
            rich_help_panel=INPUTS,
            metavar="FILE",
            help="Use these images instead (repeat the option).",
            show_default="generated",
        ),
    ] = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
    device: DeviceFlag = Device.auto,
    precision: PrecisionFlag = AUTO_TAG_PRECISION,
    compile_model: Compile = False,
    draft: Draft = False,
    decode: Decode = "auto",
    reference: Annotated[
        bool,
        typer.Option(
            "--reference/--no-reference", rich_help_panel="Report", help="Also time the official-style loop."
        ),
    ] = True,
    decode_check: Annotated[
        bool,
        typer.Option(
            "--decode-check/--no-decode-check",
            rich_help_panel="Report",
            help="Compare the decode options' speed and scores.",
        ),
    ] = True,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            rich_help_panel="Report",
            min=0.0,
            max=1.0,
            help="One threshold for every tag.",
            show_default="the reference scores' 99th percentile",
        ),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(
            "--thresholds",
            rich_help_panel="Report",
            metavar="FILE",
            help="Per-tag thresholds, one per line.",
            show_default="none",
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            rich_help_panel="Report",
            metavar="FILE",
            help="JSON report.",
            show_default="bench-results/...",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", rich_help_panel="Report", help="Seed of the random weights and images.")
    ] = 0,
) -> None:
    """Measure images/s end to end and per stage, side by side with an official-style reference loop."""
    from .. import api
    from ..bench import format_report
    from .progress import Phases

    setup_logging(False)
    with Phases("bench") as phases:
        report = api.benchmark(
            arch=arch,
            num_images=images,
            image_size=_image_size(size),
            inputs=tuple(inputs or ()),
            batch_size=batch_size,
            workers=workers,
            device=device.value,
            precision=precision.value,
            compile=compile_model,
            draft=draft,
            decode=decode,
            reference=reference,
            decode_check=decode_check,
            threshold=threshold,
            thresholds=thresholds,
            out=out_file,
            seed=seed,
            progress=phases,
        )
    out.print(format_report(report), highlight=False, markup=False)
