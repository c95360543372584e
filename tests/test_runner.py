"""ramtag.runner: device choice, precision policy, prepared vocabulary, fp32 parity, bf16 path."""

from __future__ import annotations

import pytest
import torch

from ramtag.errors import UsageError
from ramtag.model.config import get_config
from ramtag.model.ram_plus import RamPlus
from ramtag.runner import Runner, resolve_precision, select_device, suggest_batch_size


@pytest.fixture(scope="module")
def tiny() -> RamPlus:
    torch.manual_seed(0)
    return RamPlus(get_config("tiny")).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 384, 384, generator=g)  # (B, 3, S, S) normalised-like


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("cpu", "mps")
    with pytest.raises(UsageError, match="tpu"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"--device cuda.*--device cpu"):
            select_device("cuda")
        with pytest.raises(UsageError, match="CUDA"):
            select_device("cuda:1")


def test_precision_policy() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("BF16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == "fp32"  # bf16 changed decisions on the shared photos
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with pytest.raises(UsageError, match="--precision"):
        resolve_precision("int8", cpu)


def test_fp32_scores_equal_model_forward(tiny: RamPlus, images: torch.Tensor) -> None:
    with torch.no_grad():
        expected = torch.sigmoid(tiny(images))  # (B, T)
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32")
    got = runner.scores(images)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (3, 40)
    assert (got - expected).abs().max().item() < 1e-6
    # batch composition does not matter: one image at a time gives the same scores
    single = torch.cat([runner.scores(images[i : i + 1]) for i in range(3)])
    assert (single - expected).abs().max().item() < 1e-6
    assert not runner.pin_memory  # only CUDA pins host memory
    assert "fp32" in runner.describe() and "cpu" in runner.describe()


def test_vocabulary_is_prepared_once(
    tiny: RamPlus, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = RamPlus.project_labels

    def counting(self: RamPlus, label_embed: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(label_embed.shape))
        return original(self, label_embed)

    monkeypatch.setattr(RamPlus, "project_labels", counting)
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32")
    for _ in range(3):
        runner.scores(images[:2])
    assert calls == [(40, 51, 512)]
    assert runner.projected.shape == (40, 51, tiny.config.decoder.hidden_size)


def test_open_set_vocabulary_subset(tiny: RamPlus, images: torch.Tensor) -> None:
    """A vocabulary of other tags (here: the last 5 built-in ones) scores exactly like those columns."""
    embed = tiny.builtin_label_embed().detach()  # (40, 51, 512)
    full = Runner(tiny, embed, device="cpu", precision="fp32").scores(images)
    sub = Runner(tiny, embed[35:], device="cpu", precision="fp32").scores(images)
    assert sub.shape == (3, 5)
    assert (sub - full[:, 35:]).abs().max().item() < 1e-6
    with pytest.raises(UsageError, match="label_embed"):
        Runner(tiny, torch.zeros(5, 512), device="cpu")


def test_bf16_path_runs_close_to_fp32(tiny: RamPlus, images: torch.Tensor) -> None:
    ref = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32").scores(images)
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="bf16")
    assert runner.label_embed.dtype == torch.bfloat16 and runner.projected.dtype == torch.bfloat16
    got = runner.scores(images)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.all((got >= 0) & (got <= 1))
    assert (got - ref).abs().max().item() < 2e-2
    assert "bf16 autocast" in runner.describe()


def test_channels_last_gives_the_same_scores(tiny: RamPlus, images: torch.Tensor) -> None:
    a = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32").scores(images)
    b = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32", channels_last=True)
    assert (b.scores(images) - a).abs().max().item() < 1e-5
    assert "channels_last" in b.describe()


def test_bad_input_shape(tiny: RamPlus) -> None:
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32")
    with pytest.raises(UsageError, match=r"\(B, 3, H, W\)"):
        runner.scores(torch.zeros(3, 384, 384))


def test_suggest_batch_size() -> None:
    cpu = torch.device("cpu")
    tiny, large = get_config("tiny"), get_config("swin_l_384")
    b_tiny = suggest_batch_size(cpu, tiny)
    b_large = suggest_batch_size(cpu, large, precision="fp32")
    for b in (b_tiny, b_large):
        assert 1 <= b <= 16 and b & (b - 1) == 0  # a power of two, CPU cap 16
    assert b_large <= b_tiny
    # more tags need more memory per image, never a larger batch
    assert suggest_batch_size(cpu, large, num_tags=100_000, precision="fp32") <= b_large


@pytest.mark.gpu
def test_cuda_runner_matches_cpu_fp32(tiny: RamPlus, images: torch.Tensor) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32").scores(images)
    runner = Runner(RamPlus(get_config("tiny")).eval(), tiny.builtin_label_embed().detach(), device="cuda",
                    precision="bf16")
    runner.model.load_state_dict(tiny.state_dict())
    assert runner.pin_memory
    got = runner.scores(images.pin_memory())
    assert got.device.type == "cpu" and (got - cpu).abs().max().item() < 2e-2
