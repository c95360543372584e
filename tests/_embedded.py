"""Photos with embedded metadata, made inside the tests: a JPEG with an XMP packet (APP1), IPTC in a
Photoshop APP13 block (optionally with its MD5 digest, right or wrong) and EXIF fields."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

from PIL import Image

XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
   xmp:Rating="4"
   xmp:Label="Green"
   photoshop:City="Paris"
   crs:Exposure2012="+0.35"
   darktable:history_end="1">
{body}
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def bag(prop: str, values: list[str], kind: str = "Bag") -> str:
    items = "".join(f"<rdf:li>{v}</rdf:li>" for v in values)
    return f"   <{prop}><rdf:{kind}>{items}</rdf:{kind}></{prop}>"


def alt(prop: str, text: str) -> str:
    return f'   <{prop}><rdf:Alt><rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></{prop}>'


def xmp_packet(
    subject: list[str] | None = None,
    hierarchical: list[str] | None = None,
    title: str | None = None,
    description: str | None = None,
) -> bytes:
    body = []
    if subject is not None:
        body.append(bag("dc:subject", subject))
    if hierarchical is not None:
        body.append(bag("lr:hierarchicalSubject", hierarchical))
    if title is not None:
        body.append(alt("dc:title", title))
    if description is not None:
        body.append(alt("dc:description", description))
    history = (
        '   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:num="0"/>'
        "</rdf:Seq></darktable:history>"
    )
    body.append(history)
    return XMP_TEMPLATE.format(body="\n".join(body)).encode("utf-8")


def _iptc(keywords: list[bytes], title: bytes | None, caption: bytes | None, utf8: bool) -> bytes:
    def dataset(record: int, number: int, data: bytes) -> bytes:
        return bytes([0x1C, record, number]) + struct.pack(">H", len(data)) + data

    out = dataset(1, 90, b"\x1b%G") if utf8 else b""
    out += dataset(2, 0, b"\x00\x04")
    for k in keywords:
        out += dataset(2, 25, k)
    if title is not None:
        out += dataset(2, 5, title)
    if caption is not None:
        out += dataset(2, 120, caption)
    return out


def _resource(number: int, data: bytes) -> bytes:
    pad = b"\0" if len(data) % 2 else b""
    return b"8BIM" + struct.pack(">H", number) + b"\0\0" + struct.pack(">I", len(data)) + data + pad


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def make_jpeg(
    path: Path,
    *,
    xmp: bytes | None = None,
    iptc_keywords: list[str] | list[bytes] | None = None,
    iptc_title: str | None = None,
    iptc_caption: str | None = None,
    iptc_utf8: bool = True,
    digest: str | None = None,  # None: no IPTCDigest, "match", "mismatch"
    exif: dict[int, object] | None = None,
    size: tuple[int, int] = (32, 24),
) -> Path:
    """Write a small JPEG carrying the given metadata; returns ``path``."""
    buf = io.BytesIO()
    ex = Image.Exif()
    for tag, value in (exif or {}).items():
        ex[tag] = value
    Image.new("RGB", size, (90, 140, 200)).save(buf, "JPEG", exif=ex.tobytes() if exif else b"")
    data = buf.getvalue()
    segments = b""
    if xmp is not None:
        segments += _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp)
    if iptc_keywords is not None or iptc_title or iptc_caption:
        enc = "utf-8" if iptc_utf8 else "latin-1"
        words = [k if isinstance(k, bytes) else k.encode(enc) for k in iptc_keywords or []]
        block = _iptc(
            words,
            iptc_title.encode(enc) if iptc_title else None,
            iptc_caption.encode(enc) if iptc_caption else None,
            iptc_utf8,
        )
        resources = _resource(0x0404, block)
        if digest is not None:
            md5 = hashlib.md5(block).digest() if digest == "match" else b"\x01" * 16
            resources += _resource(0x0425, md5)
        segments += _segment(0xED, b"Photoshop 3.0\x00" + resources)
    path.write_bytes(data[:2] + segments + data[2:])
    return path
