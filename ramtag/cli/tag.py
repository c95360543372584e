"""``ramtag tag``: tag images and write the tags (``ramtag.api.tag_library``), with the settings from
``--config FILE``, ``--set SECTION.KEY=VALUE`` and the flags (``ramtag.api.tag_settings``)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..options import ModelOptions, OpenSetOptions, TagOptions, WriteOptions
from . import flags
from .common import Device, Lang, SidecarName, TagPrecision, WriteMode, examples, setup_logging

EXAMPLES = examples(
    "ramtag tag ~/Photos                                  # XMP sidecars next to each photo",
    "ramtag tag ~/Photos --json tags.jsonl --all-scores   # also JSON Lines with every score",
    'ramtag tag ~/Photos --open-set "corgi,meteor shower" --llm-base-url http://localhost:11434/v1',
    "ramtag tag ~/Photos --rename cat=Cats --rename selfie=  # cat written as Cats; selfie never",
    "ramtag tag ~/Photos --config ramtag.toml --set tag.top_k=10  # a settings file, one changed",
)
# the flags whose settings key is not the first section's field of the same name (ramtag.settings);
# None: not a setting as given (--rename's OLD=NEW items are parsed with --rename-file, below)
FLAG_KEYS: dict[str, str | None] = {
    "rename": None,
    "write": "write.mode",
    "json_file": "write.json_path",
    "open_set": "open_set.tags",
    "open_set_file": "open_set.tags_file",
    "open_set_threshold": "open_set.threshold",
    "hidden": "tag.include_hidden",
    "compile_model": "model.compile",
}


def tag(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Image files and/or folders (walked recursively).")
    ],
    config: flags.Config = None,
    sets: flags.Sets = None,
    write: flags.Write = WriteMode(WriteOptions.mode),  # noqa: B008 (a constant)
    json_file: flags.JsonFile = WriteOptions.json_path,
    all_scores: flags.AllScores = TagOptions.all_scores,
    sidecar_name: flags.SidecarNameFlag = SidecarName(WriteOptions.sidecar_name),  # noqa: B008 (a constant)
    hierarchy_root: flags.HierarchyRoot = WriteOptions.hierarchy_root,
    lang: flags.LangFlag = Lang(TagOptions.lang),  # noqa: B008 (a constant)
    dry_run: flags.TagDryRun = WriteOptions.dry_run,
    backup: flags.Backup = WriteOptions.backup,
    repair_sidecars: flags.RepairSidecars = WriteOptions.repair_sidecars,
    threshold: flags.Threshold = TagOptions.threshold,
    top_k: flags.TopK = TagOptions.top_k,
    rename: flags.Rename = None,
    rename_file: flags.RenameFile = None,
    open_set: flags.OpenSet = OpenSetOptions.tags,
    open_set_file: flags.OpenSetFile = OpenSetOptions.tags_file,
    only_open_set: flags.OnlyOpenSet = OpenSetOptions.only_open_set,
    open_set_threshold: flags.OpenSetThreshold = OpenSetOptions.threshold,
    descriptions: flags.Descriptions = OpenSetOptions.descriptions,
    clip: flags.Clip = OpenSetOptions.clip,
    llm_base_url: flags.LLMBaseURL = OpenSetOptions.llm_base_url,
    llm_model: flags.LLMModel = OpenSetOptions.llm_model,
    llm_api_key: flags.LLMKey = OpenSetOptions.llm_api_key,
    require_llm: flags.RequireLLM = OpenSetOptions.require_llm,
    weights: flags.Weights = ModelOptions.weights,
    device: flags.DeviceFlag = Device(ModelOptions.device),  # noqa: B008 (a constant)
    precision: flags.PrecisionFlag = TagPrecision(ModelOptions.precision),  # noqa: B008 (a constant)
    batch_size: flags.BatchSize = TagOptions.batch_size,
    workers: flags.Workers = TagOptions.workers,
    compile_model: flags.Compile = ModelOptions.compile,
    draft: flags.Draft = TagOptions.draft,
    decode: flags.Decode = TagOptions.decode,
    exif_orientation: flags.ExifOrientation = TagOptions.exif_orientation,
    hidden: flags.Hidden = TagOptions.include_hidden,
    recursive: flags.Recursive = TagOptions.recursive,
    force: flags.Force = False,
    catalog: flags.TagCatalog = None,
    quiet: flags.Quiet = False,
    verbose: flags.Verbose = False,
) -> None:
    """Tag images and write the tags (XMP sidecars by default); re-runs do only new work.

    A re-run tags only new or changed images; after Ctrl-C, what was written is kept and a re-run
    resumes. Any setting can come from a --config file or --set (flags given here win)."""
    from .. import api
    from ..device import tune_cpu_allocator
    from ..tags import parse_renames
    from ..tags.rename import rename_columns
    from .progress import print_summary, run_with_progress

    setup_logging(verbose, quiet)
    settings = api.tag_settings(config, sets or (), given_flags(ctx))
    api.check_settings(settings, catalog)  # everything that needs no model first: a typo fails at once
    m = settings.model  # the model loads only if some image needs new scores (see ramtag.source)
    source = api.tagger_source(
        m.weights,
        device=m.device,
        precision=m.precision,
        open_set=settings.open_set,
        compile=m.compile,
        on_load=lambda tagger: tune_cpu_allocator(tagger.runner.device),  # CPU: big temporaries in the heap
    )
    if rename or rename_file:  # given here: they replace the config's, each checked against the tags
        settings.tag.rename = parse_renames(rename or (), rename_file, source.vocabulary)
    else:  # the config's or --set's: checked now too, before any model loads
        rename_columns(settings.tag.rename, source.vocabulary, where="tag.rename")
    selection = api.select_or_fail(paths, settings.tag)
    try:
        summary = run_with_progress(
            paths, source, settings, force=force, catalog=catalog, quiet=quiet, selection=selection
        )
    except api.Interrupted as e:  # Ctrl-C: what was written is recorded; say so and how to go on
        print_summary(e.summary)
        sys.exit(130)
    print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def given_flags(ctx: typer.Context) -> dict[str, Any]:
    """The settings flags given on the command line (or by their env variable), as settings keys
    (``{"tag.threshold": 0.7}``): a flag left at its default does not override the config file."""
    from ..settings import settings_key

    given = {}
    for name, value in ctx.params.items():
        key = FLAG_KEYS[name] if name in FLAG_KEYS else settings_key(name)
        source = ctx.get_parameter_source(name)
        if key is not None and source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[key] = value.value if isinstance(value, Enum) else value  # a choice: its name
    return given
