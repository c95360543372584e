"""ramtag.distributed: torchrun env, deterministic balanced sharding, and the rank-0 JSON Lines merge
(run for real with 2 gloo processes on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import MULTIPROCESS_TIMEOUT_S

from ramtag.distributed import dist_info, init_if_needed, merge_jsonl, rank_path, shard
from ramtag.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_dist_info_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dist_info() == (0, 1, 0)
    assert init_if_needed(torch.device("cpu")) == torch.device("cpu")  # single process: no group
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist_info() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError, match="torchrun"):
        dist_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UsageError, match="RANK"):
        dist_info()


def test_shard_is_deterministic_disjoint_complete_balanced() -> None:
    paths = [Path(f"/lib/{d}/img{i}.jpg") for d in ("b", "a", "c") for i in range(7)]  # 21 files
    shuffled = list(reversed(paths))
    for world in (1, 2, 3, 4):
        parts = [shard(paths, r, world) for r in range(world)]
        assert parts == [shard(shuffled, r, world) for r in range(world)]  # input order does not matter
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(paths) and len(set(flat)) == len(paths)
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(UsageError):
        shard(paths, 2, 2)


def test_merge_follows_discover_order_and_appends(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    out.write_text(json.dumps({"path": "/old.jpg", "tags": []}) + "\n")
    # depth-first by name: folder "b" (and its files) sorts before the file "b.jpg"
    order = ["/l/a.jpg", "/l/b/x.jpg", "/l/b.jpg", "/l/c.jpg"]
    parts = [rank_path(out, 0), rank_path(out, 1)]
    parts[0].write_text("".join(json.dumps({"path": p}) + "\n" for p in order[0::2]))
    parts[1].write_text("".join(json.dumps({"path": p}) + "\n" for p in order[1::2]))
    assert merge_jsonl([*parts, rank_path(out, 2)], out) == 4  # a missing part is skipped
    lines = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert lines == ["/old.jpg", *order]
    assert not any(p.exists() for p in parts)


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from ramtag.distributed import dist_info, gather_jsonl, init_if_needed, rank_path, shard, cleanup

    tmp = Path(sys.argv[1])
    files = sorted(tmp.glob("photos/*.jpg"))
    rank, world, local = dist_info()
    device = init_if_needed(torch.device("cpu"))
    assert torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo"
    mine = shard(files, rank, world)
    # every rank must see a disjoint shard: all_gather the counts through the real process group
    counts = [torch.zeros(1) for _ in range(world)]
    torch.distributed.all_gather(counts, torch.tensor([float(len(mine))]))
    out = tmp / "tags.jsonl"
    with open(rank_path(out, rank), "w") as f:
        for p in mine:
            f.write(json.dumps({"path": str(p), "rank": rank}) + "\\n")
    merged = gather_jsonl(out, world)
    (tmp / f"done{rank}.json").write_text(json.dumps(
        {"rank": rank, "world": world, "local": local, "mine": [str(p) for p in mine],
         "counts": [int(c.item()) for c in counts], "merged": merged, "device": str(device)}))
    cleanup()
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_shard_and_merge(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [f"p{i:02d}.jpg" for i in range(7)]
    for n in names:
        (photos / n).write_bytes(b"x")
    script = tmp_path / "rank_script.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=MULTIPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [json.loads((tmp_path / f"done{r}.json").read_text()) for r in (0, 1)]
    assert [d["world"] for d in done] == [2, 2] and [d["local"] for d in done] == [0, 1]
    assert done[0]["counts"] == done[1]["counts"] == [4, 3]
    assert set(done[0]["mine"]).isdisjoint(done[1]["mine"])
    assert done[0]["merged"] == 7 and done[1]["merged"] == 0
    merged = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in merged] == names  # input order restored
    assert [r["rank"] for r in merged] == [0, 1, 0, 1, 0, 1, 0]
    assert not list(tmp_path.glob("tags.jsonl.rank*"))
