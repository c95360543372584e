"""CLIP prompt templates: the fallback text for an open-set tag when no LLM descriptions exist.

Each template has one ``{}`` for the tag. The fallback embeds every filled-in template with the CLIP
text encoder, L2-normalises each row, averages them, L2-normalises the mean, and repeats that one vector
to 51 rows so the open-set tag has the same ``(51, 512)`` shape as an LLM-described tag (the idea of the
official ``build_openset_label_embedding``; this list is ramtag's own, in the ImageNet-prompt style).
"""

from __future__ import annotations

TEMPLATE_SET_VERSION = "ramtag-templates-1"  # bump when the list below changes (part of the cache key)

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a cropped photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of a {}.",
    "a dark photo of the {}.",
    "a blurry photo of a {}.",
    "a blurry photo of the {}.",
    "a grainy photo of a {}.",
    "a low resolution photo of a {}.",
    "a high resolution photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a black and white photo of a {}.",
    "a black and white photo of the {}.",
    "a good photo of a {}.",
    "a good photo of the {}.",
    "a bad photo of a {}.",
    "a nice photo of the {}.",
    "a clean photo of a {}.",
    "a dirty photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a photo of a big {}.",
    "a photo of a cool {}.",
    "a photo of a weird {}.",
    "a photo of a hard to see {}.",
    "a snapshot of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "an image showing a {}.",
    "a photograph of a {}.",
    "a photograph showing the {}.",
    "a camera phone photo of a {}.",
    "a professional photo of a {}.",
    "an amateur photo of a {}.",
    "a candid photo of a {}.",
    "a travel photo with a {}.",
    "a photo taken outdoors of a {}.",
    "a photo taken indoors of a {}.",
    "a photo of a {} in the scene.",
    "a photo with a {} in the background.",
    "a photo with a {} in the foreground.",
    "a rendering of a {}.",
    "a 3d rendering of the {}.",
    "a painting of a {}.",
    "a drawing of a {}.",
    "a sketch of a {}.",
    "a cartoon of a {}.",
    "an illustration of a {}.",
    "art of the {}.",
    "a sculpture of a {}.",
    "a toy {}.",
    "a plastic {}.",
    "an origami {}.",
    "a tattoo of a {}.",
    "an embroidered {}.",
    "graffiti of a {}.",
    "a pixelated photo of a {}.",
    "a rotated photo of a {}.",
    "itap of a {}.",
    "a {} in a video game.",
    "there is a {} in the photo.",
    "this is a photo of a {}.",
    "a {}.",
)


def fill_templates(tag: str) -> list[str]:
    """Every template with ``tag`` filled in, in the list's order."""
    return [t.format(tag) for t in TEMPLATES]
