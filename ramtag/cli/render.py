"""The training and evaluation reports as text and tables (display code: the computations in
``ramtag.training`` never import this module). :func:`ramtag.cli.common.show` prints the blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from .common import Rows

if TYPE_CHECKING:
    from ..training import DryRunReport, EvalReport, TrainResult
    from ..training.metrics import SplitMetrics

Block = Rows | Text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _split_rows(title: str, splits: list[SplitMetrics]) -> Rows:
    t = Rows(
        title, ("split", "images", "skipped", "tags", "mAP", "P", "R", "F1", "macro P", "macro R", "macro F1")
    )
    for s in splits:
        t.add(
            s.name,
            s.images,
            s.skipped,
            s.tags_with_positives,
            _pct(s.mAP),
            _pct(s.micro_precision),
            _pct(s.micro_recall),
            _pct(s.micro_f1),
            _pct(s.macro_precision),
            _pct(s.macro_recall),
            _pct(s.macro_f1),
        )
    return t


def _top_unknown(unknown: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in sorted(unknown.items(), key=lambda kv: -kv[1])[:10])


def eval_report(report: EvalReport) -> list[Block]:
    """Per-split summary (mAP, micro/macro P/R/F1) and each split's worst tags."""
    parts: list[Block] = [Text(f"{report.weights}: {report.num_tags} tags", style="bold")]
    parts.append(_split_rows("at the weights' thresholds (%)", report.splits))
    if report.calibrated is not None:
        parts.append(_split_rows("at the calibrated thresholds (%)", report.calibrated))
    for s in report.splits:
        worst = s.worst(report.worst)
        if not worst:
            continue
        t = Rows(
            f"worst tags on {s.name}", ("tag", "positives", "predicted", "threshold", "AP", "P", "R", "F1")
        )
        for m in worst:
            t.add(
                m.name,
                m.positives,
                m.predicted,
                f"{m.threshold:.3f}",
                _pct(m.ap),
                _pct(m.precision),
                _pct(m.recall),
                _pct(m.f1),
            )
        parts.append(t)
    if report.calibration is not None:
        c = report.calibration
        parts.append(
            Text(
                f"calibrated {c['tags_changed']} thresholds on split {c['split']!r}; saved to {c['saved_to']}"
            )
        )
    if report.unknown_tags:
        parts.append(
            Text(f"tags not in the vocabulary (ignored): {_top_unknown(report.unknown_tags)}", style="yellow")
        )
    if report.problems:
        parts.append(
            Text(f"{len(report.problems)} entries skipped (first: {report.problems[0]})", style="yellow")
        )
    return parts


def dry_run_report(report: DryRunReport, *, top: int = 50) -> list[Block]:
    """The parsed tags and their counts, a few sample records, and what was skipped."""
    parts: list[Block] = [
        Text(
            f"{report.images} images ({', '.join(f'{k}: {v}' for k, v in report.splits.items())}), "
            f"vocabulary {report.num_tags} tags, {len(report.new_tags)} new",
            style="bold",
        )
    ]
    counts = Rows(
        f"tags found (top {min(top, len(report.tag_counts))} of {len(report.tag_counts)})", ("tag", "images")
    )
    new = set(report.new_tags)
    for tag, n in report.tag_counts[:top]:
        counts.add(tag + (" (new)" if tag in new else ""), n)
    parts.append(counts)
    samples = Rows("samples", ("image", "caption", "parsed tags", "all tags"), left=4)
    for s in report.samples:
        samples.add(
            s["image"], " | ".join(s["captions"])[:120], ", ".join(s["parsed_tags"]), ", ".join(s["tags"])
        )
    parts.append(samples)
    if report.untagged:
        parts.append(Text(f"{report.untagged} images have no tag from the vocabulary", style="yellow"))
    if report.unknown_tags:
        parts.append(
            Text(
                f"tags not in the vocabulary (add them with --tags): {_top_unknown(report.unknown_tags)}",
                style="yellow",
            )
        )
    if report.problems:
        parts.append(
            Text(f"{len(report.problems)} entries skipped (first: {report.problems[0]})", style="yellow")
        )
    return parts


def train_result(result: TrainResult) -> list[Block]:
    """One paragraph: where the weights are and how training ended."""
    losses = "  ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    lines = [
        f"trained {result.steps} steps ({result.epochs:g} epochs) on {result.images} images "
        f"in {result.seconds:.0f} s; {result.num_tags} tags ({len(result.new_tags)} new)",
        f"last losses: {losses}" if losses else "",
        f"validation: mAP {_pct(result.val.get('mAP'))}" if result.val else "",
        f"{result.skipped} unreadable images skipped" if result.skipped else "",
        f"weights: {result.out}  (ramtag tag --weights {result.out} ...)",
    ]
    return [Text("\n".join(line for line in lines if line))]
