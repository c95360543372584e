"""Training and evaluation data: image-caption(-tag) records, targets, datasets and transforms.

``--data`` accepts three layouts (see :func:`load_records`):

(a) a JSON Lines (``.jsonl``) or CSV (``.csv``) file, one image per line/row::

        {"image": "photos/beach.jpg", "caption": ["two dogs on a beach", "dogs playing"], "tags": ["sand"]}
        image,caption,tags,split            (CSV: several captions separated by "|", tags by ",")

    ``image`` is relative to the file's folder; ``caption`` is one string or a list; ``tags`` and
    ``split`` ("train" / "val" / "test") are optional. A ``.json`` file holding a list of such
    objects works too.
(b) a folder of images, each with a same-named ``.txt`` (captions, one per line) and/or ``.tags``
    (tags, comma- or newline-separated) beside it; a top-level subfolder named train/val/test
    sets the split.
(c) the official RAM training json: a list of ``{"image_path", "caption": [...], "union_label_id",
    "parse_label_id"}``; ids index the official 4,585-tag list, ``image_path`` is relative to the
    json's folder (or ``image_root``).

An image's positive tags are its explicit tags (``tags`` / ``.tags`` / ``union_label_id``) plus the
vocabulary tags found in any of its captions (:mod:`ramtag.training.parse`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from ..discover import Skipped, discover
from ..errors import ImageDecodeError, InputError, TrainingError
from ..formats import supported_extensions
from ..preprocess import Transform
from ..weights_format import Preprocessing
from .parse import TagParser

log = logging.getLogger(__name__)

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class Record:
    """One training/evaluation image with its text."""

    image: Path  # absolute image path
    captions: tuple[str, ...] = ()  # zero or more captions
    tags: tuple[str, ...] = ()  # explicit tag names (matched case-insensitively to the vocabulary)
    tag_ids: tuple[int, ...] = ()  # official union_label_id: indices into the official 4,585-tag list
    split: str | None = None  # "train" / "val" / "test" or None
    origin: str = ""  # "file:line" it came from, for messages


@dataclass
class RecordSet:
    """Records read from one or more ``--data`` sources, plus what was wrong with the rest."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per skipped entry (malformed, missing image)
    missing: int = 0  # entries whose image file does not exist

    def extend(self, other: RecordSet) -> None:
        self.records.extend(other.records)
        self.problems.extend(other.problems)
        self.missing += other.missing

    def splits(self) -> dict[str, list[Record]]:
        """Records grouped by split (None -> "all")."""
        out: dict[str, list[Record]] = {}
        for r in self.records:
            out.setdefault(r.split or "all", []).append(r)
        return out


# -- reading ---------------------------------------------------------------------------------------


def _as_list(value: Any, sep: str | None = None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(sep) if sep else [value]
        return [p.strip() for p in parts if p.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()]


def _split_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for chunk in value.split("\n") for t in chunk.split(",") if t.strip()]
    return _as_list(value)


def _norm_split(value: Any) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    s = str(value).strip().lower()
    return SPLIT_NAMES.get(s, s)


def load_records(
    source: str | Path,
    *,
    image_root: str | Path | None = None,
    split: str | None = None,
    check_images: bool = True,
) -> RecordSet:
    """Read one ``--data`` source (file or folder) into records; malformed entries become ``problems``.

    ``split`` forces every record's split (``--data val=FILE``). With ``check_images`` records whose
    image file does not exist are dropped and reported (a cheap ``stat``; decoding happens later).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(
            f"{path}: training data not found; pass a .jsonl/.csv/.json file or a folder of images"
        )
    if path.is_dir():
        result = _read_folder(path)
    elif path.suffix.lower() == ".jsonl":
        result = _read_jsonl(path, Path(image_root) if image_root else path.parent)
    elif path.suffix.lower() == ".csv":
        result = _read_csv(path, Path(image_root) if image_root else path.parent)
    elif path.suffix.lower() == ".json":
        result = _read_json(path, Path(image_root) if image_root else path.parent)
    else:
        raise InputError(f"{path}: unknown data format {path.suffix!r}; use .jsonl, .csv, .json or a folder")
    if split is not None:
        result.records = [_with_split(r, _norm_split(split)) for r in result.records]
    if check_images:
        kept = []
        for r in result.records:
            if r.image.is_file():
                kept.append(r)
            else:
                result.missing += 1
                result.problems.append(f"{r.origin}: image {r.image} not found; skipped")
        result.records = kept
    return result


def _with_split(r: Record, split: str | None) -> Record:
    return Record(r.image, r.captions, r.tags, r.tag_ids, split, r.origin)


def _record_from_mapping(item: Any, root: Path, origin: str) -> Record | str:
    """Our own format (``image`` / ``caption`` / ``tags`` / ``split``) or the official one; str = problem."""
    if not isinstance(item, dict):
        return f'{origin}: not an object; expected {{"image": ..., "caption": ...}}'
    if "image_path" in item:  # official RAM json
        ids = item.get("union_label_id") or []
        parse_ids = item.get("parse_label_id") or []
        try:
            all_ids = {int(i) for i in ids} | {int(i) for group in parse_ids for i in group}
        except (TypeError, ValueError):
            return f"{origin}: union_label_id / parse_label_id must be lists of integers"
        return Record(
            root / str(item["image_path"]),
            tuple(_as_list(item.get("caption"))),
            (),
            tuple(sorted(all_ids)),
            _norm_split(item.get("split")),
            origin,
        )
    image = item.get("image")
    if not image:
        return f'{origin}: no "image" field'
    return Record(
        root / str(image),
        tuple(_as_list(item.get("caption", item.get("captions")))),
        tuple(_split_tags(item.get("tags"))),
        (),
        _norm_split(item.get("split")),
        origin,
    )


def _collect(items: Iterator[tuple[str, Any]], root: Path) -> RecordSet:
    out = RecordSet()
    for origin, item in items:
        rec = _record_from_mapping(item, root, origin)
        if isinstance(rec, str):
            out.problems.append(rec)
        else:
            out.records.append(rec)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check permissions") from None


def _read_jsonl(path: Path, root: Path) -> RecordSet:
    def items() -> Iterator[tuple[str, Any]]:
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path.name}:{n}", f"invalid JSON ({e.msg})"

    out = RecordSet()
    for origin, item in items():
        if isinstance(item, str):
            out.problems.append(f"{origin}: {item}")
            continue
        out.extend(_collect(iter([(origin, item)]), root))
    return out


def _read_csv(path: Path, root: Path) -> RecordSet:
    out = RecordSet()
    reader = csv.DictReader(_read_text(path).splitlines())
    if not reader.fieldnames or "image" not in reader.fieldnames:
        raise InputError(f"{path}: the CSV needs a header row with an 'image' column (and 'caption', 'tags')")
    for n, row in enumerate(reader, 2):
        item = {
            "image": row.get("image"),
            "caption": _as_list(row.get("caption"), "|"),
            "tags": row.get("tags"),
            "split": row.get("split"),
        }
        out.extend(_collect(iter([(f"{path.name}:{n}", item)]), root))
    return out


def _read_json(path: Path, root: Path) -> RecordSet:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); fix the file") from None
    if not isinstance(data, list):
        raise InputError(
            f"{path}: expected a JSON list of records (official RAM json or {{image, caption}} objects)"
        )
    return _collect(((f"{path.name}[{i}]", item) for i, item in enumerate(data)), root)


def _read_folder(folder: Path) -> RecordSet:
    out = RecordSet()
    images: list[Path] = []
    for item in discover([folder]):  # the walker tagging uses: same hidden files, links, formats
        if isinstance(item, Skipped):
            out.problems.append(f"{item}; skipped")
        else:
            images.append(item)
    for image in images:
        rel = image.relative_to(folder)
        captions: list[str] = []
        tags: list[str] = []
        txt, tagfile = image.with_suffix(".txt"), image.with_suffix(".tags")
        if txt.is_file():
            captions = [line.strip() for line in _read_text(txt).splitlines() if line.strip()]
        if tagfile.is_file():
            tags = _split_tags(_read_text(tagfile))
        if not captions and not tags:
            out.problems.append(f"{rel}: no {txt.name} or {tagfile.name} beside it; skipped")
            continue
        split = SPLIT_NAMES.get(rel.parts[0].lower()) if len(rel.parts) > 1 else None
        out.records.append(Record(image, tuple(captions), tuple(tags), (), split, str(rel)))
    if not images:
        raise InputError(
            f"{folder}: no images found (extensions: {', '.join(sorted(supported_extensions()))})"
        )
    return out


def parse_data_arg(arg: str | Path) -> tuple[str | None, Path]:
    """``"val=path"`` -> ("val", path); a plain path -> (None, path)."""
    text = str(arg)
    if "=" in text and not Path(text).exists():
        name, _, rest = text.partition("=")
        if name and "/" not in name and "\\" not in name:
            return _norm_split(name), Path(rest)
    return None, Path(text)


def load_data(sources: Sequence[str | Path], *, image_root: str | Path | None = None) -> RecordSet:
    """Read every ``--data`` source (each may be ``split=path``) into one :class:`RecordSet`."""
    if not sources:
        raise InputError("no training data given; pass --data FILE_OR_FOLDER")
    out = RecordSet()
    for source in sources:
        split, path = parse_data_arg(source)
        out.extend(load_records(path, image_root=image_root, split=split))
    return out


# -- targets ---------------------------------------------------------------------------------------


@dataclass
class Targets:
    """Positive tag indices per record and what could not be matched."""

    positives: list[list[int]]  # per record, sorted vocabulary indices
    parsed: list[list[int]]  # per record, the indices found in its captions (subset of positives)
    unknown_tags: Counter[str] = field(default_factory=Counter)  # explicit tags not in the vocabulary
    untagged: int = 0  # records with no positive tag at all

    def counts(self, names: Sequence[str]) -> Counter[str]:
        """Images per tag."""
        c: Counter[str] = Counter()
        for pos in self.positives:
            c.update(names[i] for i in pos)
        return c


def build_targets(
    records: Sequence[Record],
    names: Sequence[str],
    *,
    parser: TagParser | None = None,
    id_names: Sequence[str] | None = None,
) -> Targets:
    """Positive tags of every record over the vocabulary ``names``.

    ``id_names`` is the tag list the official ``union_label_id`` indexes (the official 4,585 tags);
    for such records caption parsing only adds tags outside that list (the official ids already hold
    the parsed tags, found with the official parser).
    """
    parser = parser or TagParser(names)
    index = {n.lower(): i for i, n in enumerate(names)}
    id_map: list[int | None] = [index.get(n.lower()) for n in id_names] if id_names is not None else []
    id_known = {i for i in id_map if i is not None}
    out = Targets([], [])
    for r in records:
        pos: set[int] = set()
        for t in r.tags:
            i = index.get(t.lower())
            if i is None:
                out.unknown_tags[t] += 1
            else:
                pos.add(i)
        if r.tag_ids:
            if id_names is None:
                raise TrainingError(
                    f"{r.origin}: official union_label_id needs the official 4,585-tag vocabulary; "
                    "fine-tune official weights (--init ram-plus-swin-l-14m)"
                )
            for k in r.tag_ids:
                if not 0 <= k < len(id_map):
                    raise TrainingError(
                        f"{r.origin}: tag id {k} is outside the official tag list (0..{len(id_map) - 1})"
                    )
                j = id_map[k]
                if j is not None:
                    pos.add(j)
        found: set[int] = set()
        for caption in r.captions:
            found.update(parser.parse(caption))
        if r.tag_ids:
            found -= id_known
        pos |= found
        out.positives.append(sorted(pos))
        out.parsed.append(sorted(found))
        out.untagged += not pos
    return out


# -- transforms ------------------------------------------------------------------------------------


class _RandomAugment:
    """RandAugment with the official RAM op list (no colour-changing ops): 2 ops, magnitude 5 of 10."""

    OPS = (
        "identity",
        "autocontrast",
        "brightness",
        "sharpness",
        "equalize",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
        "rotate",
    )

    def __init__(self, num_ops: int = 2, magnitude: int = 5, p: float = 0.5):
        self.num_ops, self.m, self.p = num_ops, magnitude / 10.0, p

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        import torchvision.transforms.functional as TF
        from PIL import ImageEnhance, ImageOps

        for op in rng.sample(self.OPS, self.num_ops):
            if rng.random() > self.p:
                continue
            sign = 1 if rng.random() < 0.5 else -1
            if op == "autocontrast":
                img = ImageOps.autocontrast(img)
            elif op == "equalize":
                img = ImageOps.equalize(img)
            elif op == "brightness":
                img = ImageEnhance.Brightness(img).enhance(1 + sign * 0.9 * self.m)
            elif op == "sharpness":
                img = ImageEnhance.Sharpness(img).enhance(1 + sign * 0.9 * self.m)
            elif op in ("shear_x", "shear_y"):
                deg = math.degrees(math.atan(0.3 * self.m)) * sign
                shear = [deg, 0.0] if op == "shear_x" else [0.0, deg]
                img = TF.affine(
                    img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, fill=[128, 128, 128]
                )
            elif op in ("translate_x", "translate_y"):
                dx = int(0.45 * self.m * img.width * sign) if op == "translate_x" else 0
                dy = int(0.45 * self.m * img.height * sign) if op == "translate_y" else 0
                img = TF.affine(
                    img, angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0], fill=[128, 128, 128]
                )
            elif op == "rotate":
                img = TF.rotate(img, 30 * self.m * sign, fill=[128, 128, 128])
        return img


AUGMENTS = ("none", "flip", "standard")


@dataclass
class ViewTransform:
    """PIL RGB image -> (model view (3, S, S), CLIP view (3, C, C) or None).

    ``augment``: "none" (the inference transform: squash to S x S), "flip" (random horizontal flip),
    "standard" (the official recipe: random resized crop of 20-100 % of the area, flip, RandAugment
    2 ops at magnitude 5). Both views come from the SAME crop/flip, so the CLIP feature distilled into
    the pooled embedding describes exactly what the model sees; RandAugment applies to the model view
    only. The model view is normalised with the weights' mean/std, the CLIP view with CLIP's.
    """

    image_size: int  # model input side S
    mean: tuple[float, float, float]  # model normalisation (from the weights' Preprocessing)
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # Pillow filter for the model view
    clip_size: int | None = None  # CLIP input side (224 for ViT-B/16), None = no CLIP view
    clip_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics
    clip_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    augment: str = "none"  # one of AUGMENTS
    resize: str = "squash"  # the weights' Preprocessing.resize (only "squash" is supported, as in tagging)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise TrainingError(f"augment={self.augment!r} is unknown; choose one of {', '.join(AUGMENTS)}")
        # The tagging transform itself (ramtag.preprocess), so training and tagging cannot drift apart;
        # it raises WeightsError for a resize or interpolation tagging does not support.
        self._model_view = Transform(
            Preprocessing(self.image_size, self.mean, self.std, self.interpolation, self.resize)
        )
        self._clip_view = (
            Transform(Preprocessing(self.clip_size, self.clip_mean, self.clip_std, "bicubic"))
            if self.clip_size
            else None
        )
        self._randaug = _RandomAugment()

    @classmethod
    def for_weights(cls, pre: Preprocessing, **kwargs: Any) -> ViewTransform:
        """The views for weights with preprocessing ``pre`` (``kwargs``: clip_size, augment)."""
        return cls(pre.image_size, pre.mean, pre.std, pre.interpolation, resize=pre.resize, **kwargs)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> tuple[Tensor, Tensor | None]:
        rng = rng or random.Random()
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.augment == "standard":
            image = _random_resized_crop(image, rng, scale=(0.2, 1.0))
        if self.augment in ("flip", "standard") and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        clip_view = self._clip_view(image) if self._clip_view is not None else None  # (3, C, C)
        main = self._randaug(image, rng) if self.augment == "standard" else image
        return self._model_view(main), clip_view  # (3, S, S), (3, C, C) | None


def _random_resized_crop(
    img: Image.Image,
    rng: random.Random,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """A random crop covering ``scale`` of the area with aspect in ``ratio`` (torchvision's rule)."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.crop((x, y, x + cw, y + ch))
    return img


# -- dataset ---------------------------------------------------------------------------------------


@dataclass
class Failed:
    """An item that could not be loaded (the batch skips it)."""

    path: Path
    reason: str


class TaggingDataset(Dataset):
    """Records -> ``(model view, CLIP view, one caption, multi-hot target (T,))`` or :class:`Failed`.

    A random caption is picked per access (the official recipe), from a generator seeded by
    ``seed``, the epoch and the index, so runs and resumes are reproducible.
    """

    def __init__(
        self,
        records: Sequence[Record],
        positives: Sequence[Sequence[int]],
        num_tags: int,
        transform: Callable[..., tuple[Tensor, Tensor | None]],
        *,
        seed: int = 0,
        exif_orientation: bool = True,
    ):
        self.records = list(records)
        self.positives = [list(p) for p in positives]
        self.num_tags = num_tags
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.exif_orientation = exif_orientation

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | Failed:
        from ..decode import decode_image

        r = self.records[index]
        rng = random.Random(hash((self.seed, self.epoch, index)))
        try:
            image = decode_image(r.image, exif_orientation=self.exif_orientation)
        except ImageDecodeError as e:
            return Failed(r.image, str(e))
        except Exception as e:  # a worker must never die on one bad file
            return Failed(r.image, f"{r.image}: {type(e).__name__}: {e}")
        view, clip_view = self.transform(image, rng)
        target = torch.zeros(self.num_tags)
        if self.positives[index]:
            target[self.positives[index]] = 1.0
        caption = rng.choice(r.captions) if r.captions else ""
        return {
            "image": view,
            "clip_image": clip_view,
            "caption": caption,
            "target": target,
            "path": str(r.image),
            "index": index,
        }


@dataclass
class Batch:
    """A collated batch; ``failures`` lists the items that were skipped."""

    images: Tensor  # (B, 3, S, S) float32
    clip_images: Tensor | None  # (B, 3, C, C) float32 or None
    captions: list[str]  # B captions ("" when a record has none)
    targets: Tensor  # (B, T) float32 multi-hot
    paths: list[str]
    indices: list[int]
    failures: list[Failed]

    def __len__(self) -> int:
        return len(self.paths)


def collate(items: Sequence[dict[str, Any] | Failed]) -> Batch:
    """Stack the good items; failed ones are passed through in ``failures``."""
    good = [x for x in items if isinstance(x, dict)]
    failures = [x for x in items if isinstance(x, Failed)]
    if not good:
        return Batch(torch.zeros(0), None, [], torch.zeros(0), [], [], failures)
    clip = [g["clip_image"] for g in good]
    return Batch(
        images=torch.stack([g["image"] for g in good]),
        clip_images=torch.stack(clip) if all(c is not None for c in clip) else None,
        captions=[g["caption"] for g in good],
        targets=torch.stack([g["target"] for g in good]),
        paths=[g["path"] for g in good],
        indices=[g["index"] for g in good],
        failures=failures,
    )


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can skip the first ``skip`` indices of an epoch (mid-epoch resume)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)
