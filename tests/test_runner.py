"""ramtag.runner / ramtag.precision / ramtag.device: device choice, precision policy, prepared vocabulary,
fp32 parity, bf16 path, the bf16-checked re-check on its own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

import ramtag.precision as precision_mod
from ramtag.device import select_device, suggest_batch_size, tune_cpu_allocator
from ramtag.errors import UsageError
from ramtag.model.config import get_config
from ramtag.model.ram_plus import RamPlus
from ramtag.precision import RECHECK_MARGIN, PrecisionPolicy, low_precision_copy, resolve_precision
from ramtag.runner import Runner


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


def test_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("BF16", cpu) == "bf16"
    assert resolve_precision("bf16-checked", cpu) == "bf16-checked"
    # auto on a CPU: bf16 speed with fp32 decisions where bf16 is native, else plain fp32
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16-checked"
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
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
    model = RamPlus(get_config("tiny")).eval()
    model.load_state_dict(tiny.state_dict())
    runner = Runner(model, tiny.builtin_label_embed().detach(), device="cuda", precision="bf16")
    assert runner.pin_memory
    got = runner.scores(images.pin_memory())
    assert got.device.type == "cpu" and (got - cpu).abs().max().item() < 2e-2


# ------------------------------------------------------------------ low precision and bf16-checked


def test_low_precision_copy_gives_autocast_numbers(tiny: RamPlus, images: torch.Tensor) -> None:
    """Casting Linear/Conv weights once is what autocast does per call: the same bf16 weights (exactly)
    and the same outputs (to bf16 rounding: two instances may take other kernel paths)."""
    fast = low_precision_copy(tiny, torch.bfloat16)
    assert fast.image_proj.weight.dtype == torch.bfloat16
    assert fast.visual_encoder.patch_embed.proj.weight.dtype == torch.bfloat16  # the Conv2d
    assert torch.equal(fast.image_proj.weight, tiny.image_proj.weight.to(torch.bfloat16))
    assert tiny.image_proj.weight.dtype == torch.float32  # the original is untouched
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)  # autocast keeps norms fp32
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fast(images[:2]), tiny(images[:2])
    torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1e-2)


def _fp32_and_bf16_logits(tiny: RamPlus, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    embed = tiny.builtin_label_embed().detach()
    l32 = Runner(tiny, embed, device="cpu", precision="fp32").logits(images)
    l16 = Runner(tiny, embed, device="cpu", precision="bf16").logits(images)
    return l32, l16


def test_bf16_checked_decides_exactly_like_fp32(tiny: RamPlus, images: torch.Tensor) -> None:
    """Thresholds put between each tag's fp32 and bf16 score on image 0: plain bf16 flips those
    decisions, bf16-checked re-decides them in fp32 and gets every decision of fp32."""
    l32, l16 = _fp32_and_bf16_logits(tiny, images)  # (3, 40)
    gap = (l32[0] - l16[0]).abs()
    assert gap.max() > 1e-3  # bf16 really differs, so the test can fail
    thresholds = torch.sigmoid((l32[0] + l16[0]).double() / 2)  # (40,) midway: bf16 and fp32 disagree
    fp32_dec = torch.sigmoid(l32).double() > thresholds
    bf16_dec = torch.sigmoid(l16).double() > thresholds
    assert int((fp32_dec != bf16_dec).sum()) >= 10  # plain bf16 flips many decisions

    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="bf16-checked")
    assert runner.checked and "re-check" in runner.describe()
    scores = runner.scores(images, thresholds)
    assert torch.equal(scores.double() > thresholds, fp32_dec)
    st = runner.recheck_stats
    # image 0 calibrates: all its tags in fp32, and the band is >= 3x the error seen there
    assert st.calibration_error == pytest.approx(float(gap.max()), rel=1e-3)
    assert runner.margin >= max(RECHECK_MARGIN, 3 * st.calibration_error) - 1e-9
    assert (scores[0] - torch.sigmoid(l32[0])).abs().max() < 1e-6
    # other images: the pairs near a threshold carry fp32 scores, the ones far from it keep bf16 ones
    dist = (l16[1:] - torch.logit(thresholds).float()).abs()  # (2, 40)
    near, far = dist <= RECHECK_MARGIN, dist > runner.margin
    assert near.any() and far.any()
    assert (scores[1:][near] - torch.sigmoid(l32)[1:][near]).abs().max() < 1e-6
    assert st.images == 3 and 1 <= st.rechecked_images <= 3 and st.rechecked_pairs >= int(near.sum())
    assert st.max_error >= st.calibration_error and st.seconds > 0
    plain = runner.scores(images)  # this runner's own bf16 scores (no thresholds: no re-check)
    assert torch.equal(scores[1:][far], plain[1:][far])


def test_bf16_checked_without_borderline_pairs_is_plain_bf16(tiny: RamPlus, images: torch.Tensor) -> None:
    l32, l16 = _fp32_and_bf16_logits(tiny, images)
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="bf16-checked")
    far = torch.full((40,), 0.999999, dtype=torch.float64)  # nothing comes near
    first = runner.scores(images, far)  # image 0 calibrates (exact), the others stay bf16
    assert runner.recheck_stats.rechecked_images == 0
    plain = runner.scores(images)  # no thresholds: nothing to check
    # plain bf16 (another bf16 instance agrees to bf16 rounding; fp32 differs)
    torch.testing.assert_close(plain, torch.sigmoid(l16), rtol=1.6e-2, atol=1e-3)
    assert not torch.equal(plain, torch.sigmoid(l32))
    assert torch.equal(first[1:], plain[1:])
    assert torch.equal(runner.scores(images, far), plain)  # calibrated once per runner
    with pytest.raises(UsageError, match="thresholds"):
        runner.scores(images, far[:5])


def test_bf16_checked_margin_widens_to_the_errors_it_sees(
    tiny: RamPlus, images: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    l32, l16 = _fp32_and_bf16_logits(tiny, images)
    runner = Runner(
        tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="bf16-checked", margin=1e-9
    )
    thresholds = torch.sigmoid(l16[1].double())  # exactly on image 1's bf16 scores: all borderline
    with caplog.at_level("INFO", logger="ramtag.precision"):
        runner.scores(images, thresholds)
    error = float((l32 - l16).abs().max())
    assert runner.margin == pytest.approx(3 * runner.recheck_stats.max_error)
    assert runner.recheck_stats.max_error >= float((l32[1] - l16[1]).abs().max()) * 0.999
    assert runner.recheck_stats.max_error <= error * 1.001
    assert "re-check margin" in caplog.text
    with pytest.raises(UsageError, match="margin"):
        Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", margin=-1.0)


def test_cpu_allocator_tuning_is_applied_once_and_can_be_turned_off() -> None:
    """Fresh processes: glibc accepts the tuning (asked twice, applied once); the variable turns it off."""
    code = "from ramtag.device import tune_cpu_allocator as t; print(t(), t())"
    env = {k: v for k, v in os.environ.items() if k != "RAMTAG_NO_MALLOC_TUNING"}

    def run(extra: dict[str, str]) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True
        )
        return proc.stdout.split()

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert run({}) == ["True", "True"]
    assert run({"RAMTAG_NO_MALLOC_TUNING": "1"}) == ["False", "False"]
    assert isinstance(tune_cpu_allocator(), bool)
    assert tune_cpu_allocator("cuda:0") is False and tune_cpu_allocator(torch.device("mps")) is False


def test_building_a_runner_leaves_the_allocator_alone() -> None:
    """The tuning is process-wide: only the CLI / the benchmark ask for it, a Runner never does."""
    code = (
        "import torch, ramtag.device as d; from ramtag.model.config import get_config;"
        "from ramtag.model.ram_plus import RamPlus; from ramtag.runner import Runner;"
        "m = RamPlus(get_config('tiny')).eval();"
        "Runner(m, m.builtin_label_embed().detach(), device='cpu', precision='fp32');"
        "print(d._ALLOCATOR_TUNED)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAMTAG_NO_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None"]


def test_bf16_checked_goes_straight_to_fp32_when_every_image_is_borderline(
    tiny: RamPlus, images: torch.Tensor
) -> None:
    l32, _ = _fp32_and_bf16_logits(tiny, images)
    runner = Runner(
        tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="bf16-checked", margin=100.0
    )
    thresholds = torch.full((40,), 0.5, dtype=torch.float64)  # within 100 logits of everything
    first = runner.scores(images, thresholds)  # image 0 calibrates, 1 and 2 re-checked: rate 1.0
    assert runner.recheck_stats.rechecked_images == 3 and runner.recheck_stats.direct_images == 0
    second = runner.scores(images, thresholds)  # now straight fp32, no bf16 pass
    assert runner.recheck_stats.direct_images == 3 and runner.recheck_stats.rechecked_images == 3
    for got in (first, second):
        assert (got - torch.sigmoid(l32)).abs().max() < 1e-5
    for _ in range(6):  # the 8th batch is a probe through bf16 again
        runner.scores(images, thresholds)
    assert runner.recheck_stats.rechecked_images == 6 and runner.recheck_stats.direct_images == 6 * 3


def test_encode_then_decode_is_the_forward_pass(tiny: RamPlus, images: torch.Tensor) -> None:
    """Runner.encode / Runner.decode (the halves the benchmark times) compose to Runner.logits."""
    runner = Runner(tiny, tiny.builtin_label_embed().detach(), device="cpu", precision="fp32")
    embeds = runner.encode(images)
    assert embeds.shape[0] == 3 and embeds.shape[-1] == tiny.config.embed_dim
    got = runner.decode(embeds).float()
    assert got.shape == (3, 40)
    assert (got - runner.logits(images)).abs().max().item() < 1e-5
    with pytest.raises(UsageError, match=r"\(B, 3, H, W\)"):
        runner.encode(torch.zeros(3, 384, 384))


# ------------------------------------------------------------------ the re-check object on its own


class _LinearExact:
    """A stand-in float32 network: image i's logit for tag t is x[i, 0, 0, 0] + label_embed[t, 0, 0], so the
    fp32 logits are known exactly and the test controls which pairs lie near a threshold."""

    def __init__(self) -> None:
        self.encoded = 0  # images run through the "backbone"
        self.decoded: list[int] = []  # tags decoded per call

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded += images.shape[0]
        return images[:, 0, :1, :1].reshape(-1, 1, 1)  # (b, 1, 1): one value per image

    def tag_logits(self, image_embeds: torch.Tensor, label_embed: torch.Tensor) -> torch.Tensor:
        self.decoded.append(int(label_embed.shape[0]))
        return image_embeds.reshape(-1, 1) + label_embed[:, 0, 0][None, :]  # (b, t)


def _policy(margin: float = 0.05) -> tuple[PrecisionPolicy, _LinearExact, torch.Tensor, torch.Tensor]:
    policy = PrecisionPolicy("bf16-checked", torch.device("cpu"), margin=margin)
    exact = _LinearExact()
    label_embed = torch.linspace(-2, 2, 6).reshape(6, 1, 1).expand(6, 2, 1).contiguous()  # (T=6, D=2, E=1)
    policy.bind(exact, label_embed)
    x = (
        torch.tensor([0.0, 1.0, -1.0, 0.5]).reshape(4, 1, 1, 1).expand(4, 3, 1, 1).contiguous()
    )  # (B, 3, 1, 1)
    fp32 = x[:, 0, 0, 0][:, None] + label_embed[:, 0, 0][None, :]  # (4, 6)
    return policy, exact, x, fp32


def test_recheck_replaces_only_borderline_pairs_and_calibrates_once() -> None:
    policy, exact, x, fp32 = _policy()
    assert policy.checked and policy.autocast and policy.dtype == torch.bfloat16
    fast = fp32 + 0.01  # a uniform "bf16 error" of 0.01 logit
    thresholds = torch.full((6,), 0.5, dtype=torch.float64)  # logit 0
    near = fast.abs() <= 0.05  # pairs within the band of the threshold
    got = policy.recheck(x, fast.clone(), thresholds)
    st = policy.stats
    # image 0 calibrates (all its tags exact); error 0.01 -> band stays 0.05 (3 * 0.01 < 0.05)
    assert st.calibration_error == pytest.approx(0.01, abs=1e-6) and policy.margin == 0.05
    assert torch.allclose(got[0], fp32[0])
    for i in range(1, 4):
        for t in range(6):
            want = fp32[i, t] if near[i, t] else fast[i, t]
            assert got[i, t] == pytest.approx(float(want), abs=1e-6), (i, t)
    assert st.rechecked_pairs >= int(near[1:].sum())
    # a second batch does not calibrate again
    calls = exact.encoded
    policy.recheck(x, fast.clone(), thresholds)
    assert st.calibration_error == pytest.approx(0.01, abs=1e-6)
    assert exact.encoded - calls == int(near[1:].any(dim=1).sum()) + int(near[0].any())


def test_recheck_margin_widens_to_three_times_the_error() -> None:
    policy, _, x, fp32 = _policy(margin=0.05)
    fast = fp32 + 0.04  # error 0.04 -> band 0.12
    policy.recheck(x, fast.clone(), torch.full((6,), 0.5, dtype=torch.float64))
    assert policy.stats.max_error == pytest.approx(0.04, abs=1e-6)
    assert policy.margin == pytest.approx(0.12, abs=1e-5)
    with pytest.raises(UsageError, match="thresholds"):
        policy.recheck(x, fast.clone(), torch.full((5,), 0.5, dtype=torch.float64))
    with pytest.raises(UsageError, match="margin"):
        PrecisionPolicy("bf16-checked", torch.device("cpu"), margin=-1.0)


def test_cost_model_sends_batches_straight_to_fp32_when_all_are_borderline() -> None:
    policy, _, x, fp32 = _policy(margin=100.0)  # everything is borderline
    thresholds = torch.full((6,), 0.5, dtype=torch.float64)
    assert policy.prefer_fp32() is False  # nothing measured yet
    policy.recheck(x, fp32.clone() + 0.01, thresholds)
    assert policy.prefer_fp32() is True
    assert torch.allclose(policy.exact_logits(x), fp32)
    assert policy.stats.direct_images == 4
    plain = PrecisionPolicy("fp32", torch.device("cpu"))
    assert not plain.checked and not plain.autocast and plain.prefer_fp32() is False
    assert plain.describe() == "fp32"
