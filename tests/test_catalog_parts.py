"""torchrun: each rank records into its own catalog part on its local storage; rank 0 merges them.
Run for real with 2 gloo processes, including a killed run whose parts the next run merges."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ramtag.catalog import Catalog

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import torch
    from ramtag.catalog import Catalog, Identity, ImageScores
    from ramtag.catalog.parts import part_path
    from ramtag.distributed import cleanup, dist_info, gather_catalog, init_if_needed, shard
    from ramtag.tags import Vocabulary

    tmp, batch, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    rank, world, _ = dist_info()
    init_if_needed(torch.device("cpu"))
    catalog = tmp / "catalog.sqlite"
    part = part_path(catalog, rank, root=tmp / f"local{rank}")  # each "machine" its own local disk
    files = shard(sorted(tmp.glob(f"photos/{batch}*.jpg")), rank, world)
    with Catalog(part) as cat:
        vid = cat.add_vocabulary(Vocabulary(("dog", "cat"), (0.5, 0.5)))
        run = cat.begin_run("tag", {"batch": batch}, run_id=f"run-{batch}")
        for f in files:
            item = ImageScores(f, Identity.of_path(f), "tiny", vid, np.array([0.9, 0.1 * rank]))
            cat.record_images([item], run)
            cat.record_output(f, "xmp", f"{f}.xmp", [("dog", 0.9)], "fp", "k", run)
        cat.finish_run(run, {"tagged": len(files), "rank": rank})
    if mode == "kill":
        torch.distributed.barrier()
        sys.exit(0)  # "killed" before the merge: the parts stay on the ranks' local disks
    merged = gather_catalog(catalog, part)
    (tmp / f"merged{rank}-{batch}").write_text(str(merged))
    cleanup()
    """
)


def _torchrun(tmp_path: Path, batch: str, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    script = tmp_path / "rank_script.py"
    script.write_text(_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path), batch, mode], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_record_parts_and_rank0_merges_even_after_a_kill(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for batch in ("a", "b"):
        for i in range(5):
            (photos / f"{batch}{i}.jpg").write_bytes(f"{batch}{i}".encode())

    _torchrun(tmp_path, "a", "kill")  # first run killed before merging
    parts = sorted(tmp_path.glob("local*/catalog-parts/*.sqlite"))
    assert [p.parent.parent.name for p in parts] == ["local0", "local1"]
    assert not (tmp_path / "catalog.sqlite").exists()

    _torchrun(tmp_path, "b", "merge")  # the next run records into the same parts and merges all
    assert (tmp_path / "merged0-b").read_text() == "10" and (tmp_path / "merged1-b").read_text() == "0"
    assert not list(tmp_path.glob("local*/catalog-parts/*.sqlite*"))
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        names = sorted(r.path.name for r in cat.query("dog"))
        assert names == [f"{b}{i}.jpg" for b in "ab" for i in range(5)]
        assert len(cat.outputs_of_run("run-a")) == 5 and len(cat.outputs_of_run("run-b")) == 5
        assert {r.id for r in cat.runs()} == {"run-a", "run-b"}
        # rank 1's scores came through (its cat score is 0.1, rank 0's 0.0): 2 of each 5 files
        assert sorted(r.path.name for r in cat.query("cat>=0.05")) == ["a1.jpg", "a3.jpg", "b1.jpg", "b3.jpg"]
