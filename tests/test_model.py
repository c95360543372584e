"""RamPlus building blocks against plain re-statements of the official arithmetic (small random models)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ramtag.model import CONFIGS, DecoderConfig, RamPlus, RamPlusConfig, SwinConfig
from ramtag.model.backbone import SwinBackbone
from ramtag.model.decoder import TagDecoder

# 96 px, patch 4 -> 24x24 tokens (window 6: 16 windows, block 1 shifted) -> 12x12 after one merge.
SMALL = RamPlusConfig(
    name="small-test",
    swin=SwinConfig(img_size=96, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=6),
    decoder=DecoderConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48),
    num_tags=7,
)


@pytest.fixture(scope="module")
def model() -> RamPlus:
    torch.manual_seed(0)
    m = RamPlus(SMALL).eval()
    with torch.no_grad():  # non-trivial values everywhere (LayerNorm affine, biases)
        for p in m.parameters():
            if p.dim() <= 1 and p is not m.reweight_scale:
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_parameter_names_and_shapes_follow_the_contract():
    with torch.device("meta"):
        m = RamPlus(CONFIGS["tiny"])
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["label_embed"] == (40 * 51, 512)
    assert shapes["reweight_scale"] == ()
    assert shapes["image_proj.weight"] == (512, 256)
    assert shapes["wordvec_proj.weight"] == (64, 512)
    assert shapes["fc.weight"] == (1, 64)
    assert shapes["tagging_head.layers.1.cross_attn.key.weight"] == (64, 512)
    assert shapes["visual_encoder.layers.1.downsample.reduction.weight"] == (64, 128)
    assert "visual_encoder.layers.0.downsample.reduction.weight" not in shapes
    assert not any("relative_position_index" in k or "attn_mask" in k for k in shapes)  # not persistent
    assert not any(k.startswith("visual_encoder.head") for k in shapes)
    assert RamPlus(SMALL).reweight_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_swin_windows_and_shifts_match_the_official_rules():
    """Official Swin: shift only odd blocks and only where the resolution exceeds the window."""
    tiny = SwinBackbone(CONFIGS["tiny"].swin)
    got = [[(b.window_size, b.shift_size) for b in stage.blocks] for stage in tiny.layers]
    assert got == [
        [((12, 12), (0, 0))],
        [((12, 12), (0, 0))],
        [((12, 12), (0, 0)), ((12, 12), (6, 6))],
        [((12, 12), (0, 0))],
    ]  # stage 4: 12x12 tokens = one window, never shifted
    shifted = tiny.layers[2].blocks[1]
    mask = shifted.attn_mask  # (windows, 144, 144), 0 within a region, -100 across
    assert mask is not None and mask.shape == (4, 144, 144)
    assert set(mask.unique().tolist()) == {0.0, -100.0}


def test_patch_merging_uses_the_official_concat_order():
    torch.manual_seed(0)
    merge = SwinBackbone(SMALL.swin).layers[1].downsample
    x = torch.randn(2, 8, 6, 16)  # (B, H, W, C)
    official = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    expected = merge.reduction(merge.norm(official))
    assert torch.allclose(merge(x), expected, atol=1e-6)
    assert merge.reduction.bias is None and merge.norm.eps == 1e-5


def test_backbone_returns_mean_token_then_spatial_tokens(model, images):
    with torch.no_grad():
        tokens = model.visual_encoder(images)
        nhwc = model.visual_encoder.forward_features(images)
    assert tokens.shape == (3, 1 + 144, 32)  # 12x12 tokens, 16 * 2 channels
    assert torch.equal(tokens[:, 1:], nhwc.flatten(1, 2))
    assert torch.allclose(tokens[:, 0], tokens[:, 1:].mean(dim=1), atol=1e-6)


def test_fused_window_attention_agrees(model, images):
    with torch.no_grad():
        plain = model.visual_encoder(images)
        model.set_fused_attention(True)
        try:
            fused = model.visual_encoder(images)
        finally:
            model.set_fused_attention(False)
    assert torch.allclose(plain, fused, atol=1e-5)


def reference_decoder(decoder: TagDecoder, heads: int, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """BERT cross-attention layer written out: explicit softmax(QK^T / sqrt(d)) V, post-LayerNorm."""
    for layer in decoder.layers:
        a = layer.cross_attn
        B, T, H = h.shape
        d = H // heads
        q = a.query(h).view(B, T, heads, d).permute(0, 2, 1, 3)
        k = a.key(tokens).view(B, -1, heads, d).permute(0, 2, 1, 3)
        v = a.value(tokens).view(B, -1, heads, d).permute(0, 2, 1, 3)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, H)
        h = F.layer_norm(a.out(ctx) + h, (H,), layer.norm1.weight, layer.norm1.bias, 1e-12)
        f = layer.ffn.fc2(0.5 * layer.ffn.fc1(h) * (1 + torch.erf(layer.ffn.fc1(h) / math.sqrt(2))))
        h = F.layer_norm(f + h, (H,), layer.norm2.weight, layer.norm2.bias, 1e-12)
    return h


def test_decoder_matches_explicit_bert_cross_attention(model):
    g = torch.Generator().manual_seed(2)
    h, tokens = torch.randn(2, 5, 32, generator=g), torch.randn(2, 9, 512, generator=g)
    with torch.no_grad():
        got = model.tagging_head(h, tokens)
        want = reference_decoder(model.tagging_head, 4, h, tokens)
    assert got.shape == (2, 5, 32)
    assert torch.allclose(got, want, atol=1e-5)


def official_style_logits(model: RamPlus, images: torch.Tensor, label_embed: torch.Tensor) -> torch.Tensor:
    """The official generate_tag order of operations: per-image loop, mix in 512-d, then wordvec_proj."""
    T, D, E = label_embed.shape
    emb = model.encode_image(images)
    cls = emb[:, 0] / emb[:, 0].norm(dim=-1, keepdim=True)
    sim = model.reweight_scale.exp() * cls @ label_embed.reshape(-1, E).t()
    w = torch.softmax(sim.view(-1, T, D), dim=2)
    mixed = torch.stack([(w[i].unsqueeze(-1) * label_embed).sum(dim=1) for i in range(len(images))])
    queries = torch.relu(model.wordvec_proj(mixed))
    return model.fc(reference_decoder(model.tagging_head, 4, queries, emb)).squeeze(-1)


def test_batched_logits_equal_the_official_per_image_procedure(model, images):
    with torch.no_grad():
        label_embed = model.builtin_label_embed()
        want = official_style_logits(model, images, label_embed)
        direct = model(images)
        emb = model.encode_image(images)
        projected = model.tag_logits(emb, label_embed, model.project_labels(label_embed))
        single = torch.cat([model(images[i : i + 1]) for i in range(len(images))])
    assert direct.shape == (3, 7)
    assert torch.allclose(direct, want, atol=1e-5)
    assert torch.allclose(projected, want, atol=1e-5)
    assert torch.allclose(single, direct, atol=1e-5)


def test_vocabularies_concatenate_exactly(model, images):
    """No self-attention: each tag's logit depends only on its own descriptions."""
    g = torch.Generator().manual_seed(3)
    extra = F.normalize(torch.randn(4, 51, 512, generator=g), dim=-1)
    builtin = model.builtin_label_embed()
    with torch.no_grad():
        emb = model.encode_image(images)
        both = model.tag_logits(emb, torch.cat([builtin, extra]))
        alone = model.tag_logits(emb, extra)
        reversed_ = model.tag_logits(emb, extra.flip(0))
    assert both.shape == (3, 11)
    assert torch.allclose(both[:, :7], model.tag_logits(emb, builtin).detach(), atol=1e-5)
    assert torch.allclose(both[:, 7:], alone, atol=1e-5)
    assert torch.allclose(reversed_, alone.flip(1), atol=1e-5)


def test_builtin_label_embed_is_a_view(model):
    view = model.builtin_label_embed()
    assert view.shape == (7, 51, 512)
    assert view.data_ptr() == model.label_embed.data_ptr()
    assert torch.equal(view[2, 5], model.label_embed[2 * 51 + 5])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = RamPlus(SMALL).train()
    m(torch.randn(2, 3, 96, 96)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
