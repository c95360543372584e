"""The benchmark report as a few human-readable lines."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines for the CLI."""
    e2e = report["end_to_end"]
    st = report["stages"]
    lines = [
        f"{report['model']['arch']} on {report['runner']}; {report['images']['count']} images "
        f"{report['images']['first_size'][0]}x{report['images']['first_size'][1]}, batch {e2e['batch_size']}",
        f"end to end: {e2e['images_per_s']:.3f} images/s",
        f"stages (s/img): decode+resize {st['decode_resize_s_per_img']:.4f}, "
        f"backbone {st['backbone_s_per_img']:.4f}, "
        f"re-weighting+decoder {st['reweight_decoder_s_per_img']:.4f}, "
        f"XMP write {st['write_xmp_s_per_img']:.4f}",
    ]
    if report.get("recheck"):
        rc = report["recheck"]
        lines.append(
            f"fp32 re-check: {rc['rechecked_images']} of {rc['images']} images, {rc['rechecked_pairs']} "
            f"(image, tag) pairs within {rc['margin']:g} logit of a threshold "
            f"({st.get('recheck_s_per_img', 0.0):.4f} s/img; largest bf16 error {rc['max_error']:.4f} logit)"
        )
    if report.get("reference"):
        ag = report["agreement"]
        lines.append(
            f"official-style loop: {report['reference']['images_per_s']:.3f} images/s; "
            f"ramtag is {report['ratio']:.2f}x faster"
        )
        lines.append(
            f"decisions: {ag['differing_decisions']} of {ag['decisions']} differ "
            f"(max |score diff| {ag['max_abs_score_diff']:.2e}; threshold {ag['thresholds']}; "
            f"{ag['selected_reference']} selected by the reference)"
        )
    if report.get("decode_options"):
        d = report["decode_options"]
        parts = [f"exact {d['exact_s_per_img']:.4f}"]
        for n in ("draft", "torchvision"):
            if f"{n}_s_per_img" in d:
                parts.append(
                    f"{n} {d[f'{n}_s_per_img']:.4f} (max |score diff| {d[f'{n}_max_abs_score_diff']:.1e})"
                )
        lines.append(
            "decode s/img: " + ", ".join(parts) + f"; recommended: {', '.join(d['recommend']) or 'exact'}"
        )
    m = report["memory"]
    lines.append(
        f"peak RSS {m['peak_rss_mb']:.0f} MB"
        + (f", GPU {m['gpu_peak_mb']:.0f} MB" if m["gpu_peak_mb"] else "")
    )
    lines.append(f"saved {report['out']}")
    return "\n".join(lines)
