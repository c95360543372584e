"""Rich renderables for the training/evaluation reports (the CLI prints them; the computations
never import this module)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .evaluate import EvalReport
from .metrics import SplitMetrics
from .trainer import DryRunReport, TrainResult


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def eval_report_table(report: EvalReport) -> Group:
    """Per-split summary (mAP, micro/macro P/R/F1) and each split's worst tags."""
    parts: list[Table | Text] = [Text(f"{report.weights}: {report.num_tags} tags", style="bold")]

    def summary(title: str, splits: list[SplitMetrics]) -> Table:
        t = Table(title=title, title_justify="left")
        for col in (
            "split",
            "images",
            "skipped",
            "tags",
            "mAP",
            "P",
            "R",
            "F1",
            "macro P",
            "macro R",
            "macro F1",
        ):
            t.add_column(col, justify="left" if col == "split" else "right")
        for s in splits:
            t.add_row(
                s.name,
                str(s.images),
                str(s.skipped),
                str(s.tags_with_positives),
                _pct(s.mAP),
                _pct(s.micro_precision),
                _pct(s.micro_recall),
                _pct(s.micro_f1),
                _pct(s.macro_precision),
                _pct(s.macro_recall),
                _pct(s.macro_f1),
            )
        return t

    parts.append(summary("at the weights' thresholds (%)", report.splits))
    if report.calibrated is not None:
        parts.append(summary("at the calibrated thresholds (%)", report.calibrated))
    for s in report.splits:
        worst = s.worst(report.worst)
        if not worst:
            continue
        t = Table(title=f"worst tags on {s.name}", title_justify="left")
        for col in ("tag", "positives", "predicted", "threshold", "AP", "P", "R", "F1"):
            t.add_column(col, justify="left" if col == "tag" else "right")
        for m in worst:
            t.add_row(
                m.name,
                str(m.positives),
                str(m.predicted),
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
        shown = ", ".join(
            f"{k} ({v})" for k, v in sorted(report.unknown_tags.items(), key=lambda kv: -kv[1])[:10]
        )
        parts.append(Text(f"tags not in the vocabulary (ignored): {shown}", style="yellow"))
    if report.problems:
        parts.append(
            Text(f"{len(report.problems)} entries skipped (first: {report.problems[0]})", style="yellow")
        )
    return Group(*parts)


def dry_run_table(report: DryRunReport, *, top: int = 50) -> Group:
    """The parsed tags and their counts, a few sample records, and what was skipped."""
    parts: list[Table | Text] = [
        Text(
            f"{report.images} images ({', '.join(f'{k}: {v}' for k, v in report.splits.items())}), "
            f"vocabulary {report.num_tags} tags, {len(report.new_tags)} new",
            style="bold",
        )
    ]
    counts = Table(
        title=f"tags found (top {min(top, len(report.tag_counts))} of {len(report.tag_counts)})",
        title_justify="left",
    )
    counts.add_column("tag")
    counts.add_column("images", justify="right")
    new = set(report.new_tags)
    for tag, n in report.tag_counts[:top]:
        counts.add_row(tag + (" (new)" if tag in new else ""), str(n))
    parts.append(counts)
    samples = Table(title="samples", title_justify="left")
    for col in ("image", "caption", "parsed tags", "all tags"):
        samples.add_column(col)
    for s in report.samples:
        samples.add_row(
            s["image"], " | ".join(s["captions"])[:120], ", ".join(s["parsed_tags"]), ", ".join(s["tags"])
        )
    parts.append(samples)
    if report.untagged:
        parts.append(Text(f"{report.untagged} images have no tag from the vocabulary", style="yellow"))
    if report.unknown_tags:
        shown = ", ".join(
            f"{k} ({v})" for k, v in sorted(report.unknown_tags.items(), key=lambda kv: -kv[1])[:10]
        )
        parts.append(Text(f"tags not in the vocabulary (add them with --tags): {shown}", style="yellow"))
    if report.problems:
        parts.append(
            Text(f"{len(report.problems)} entries skipped (first: {report.problems[0]})", style="yellow")
        )
    return Group(*parts)


def train_result_text(result: TrainResult) -> Text:
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
    return Text("\n".join(line for line in lines if line))
