"""XMP sidecars written by ramtag itself (no external program), merged into whatever is already there.

Layout of what ramtag adds to the first ``rdf:Description`` of a packet::

    dc:subject                  rdf:Bag  cat, dog                      (every DAM reads this)
    lr:hierarchicalSubject      rdf:Bag  ramtag|cat, ramtag|dog        (Lightroom, darktable, digiKam)
    digiKam:TagsList            rdf:Seq  ramtag/cat, ramtag/dog        (digiKam)
    MicrosoftPhoto:LastKeywordXMP rdf:Bag ramtag/cat ...               (only where the file already has it)
    ramtag:Tags, ramtag:Added<Property>, ramtag:Filled<Property>, ramtag:UserRoots, ramtag:Seeded,
    ramtag:Model, ramtag:Date, ramtag:Created                       (ramtag's record)

The keyword properties are kept in agreement, because each reader trusts a different one (darktable
reads lr:hierarchicalSubject and ignores dc:subject when both exist; digiKam and Immich read
digiKam:TagsList first): where the user's sidecar has one of dc:subject / lr:hierarchicalSubject /
digiKam:TagsList but not another, the missing one is filled from the present one (``|`` <-> ``/``), and
flat keywords that appear nowhere in the hierarchy are added to it as top-level keywords, as Lightroom
itself reads them. What was filled is recorded (``Filled<Property>``) and taken out again by ``untag``.

A sidecar ramtag creates starts from the photo's embedded metadata (:mod:`ramtag.writers.embedded`):
the keyword, rating, label, title, description, people/region and IPTC properties of its XMP packet,
reconciled with its IPTC and EXIF fields the way the Metadata Working Group's guidance says (IPTC over
XMP only when the IPTC digest shows the IPTC was changed without the XMP; a non-blank EXIF
ImageDescription over both). Develop settings (darktable, Camera Raw) and file-specific properties are
never copied: a sidecar's history would be applied to the wrong picture.

Merging never clobbers: the document is parsed with a namespace-aware DOM that keeps every element,
attribute, prefix, comment and ``<?xpacket?>`` instruction, only the keyword ``rdf:li`` items are
added or removed, and the result is serialized back by a small writer of our own (minidom's would
mangle newlines in attribute values). Files with a DTD or entity declarations are refused, so no
entity expansion can happen. A sidecar that is not valid XMP raises :class:`SidecarError` and is
never overwritten (``repair_sidecars=True`` keeps it as ``*.bak`` and starts a fresh one).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.dom import Node, expatbuilder, minidom
from xml.parsers.expat import ExpatError

from ramtag.errors import OutputError, RamtagError, SidecarError, printable
from ramtag.formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from ramtag.results import ImageTags
from ramtag.writers.atomic import atomic_write_bytes
from ramtag.writers.base import (
    RAMTAG_NS,
    KeywordField,
    RamtagRecord,
    WriteOutcome,
    clean_tag_names,
    plan_fields,
    utc_now,
)
from ramtag.writers.embedded import EmbeddedMetadata, read_embedded
from ramtag.writers.lock import file_lock

log = logging.getLogger(__name__)

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_XMLNS = "http://www.w3.org/2000/xmlns/"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
NS_DIGIKAM = "http://www.digikam.org/ns/1.0/"
NS_MSPHOTO = "http://ns.microsoft.com/photo/1.0/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_XML = "http://www.w3.org/XML/1998/namespace"

# A real photo's sidecar is a few KB (a heavily edited Lightroom one some hundred KB); anything larger is
# reported and left alone instead of being parsed (a 60 MB one took 67 s and 3 GB to merge).
MAX_SIDECAR_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100  # real XMP nests a dozen levels; deeper is hostile (and would exhaust the recursion limit)


@dataclass(frozen=True)
class XmpField(KeywordField):
    """A keyword property of the XMP packet."""

    ns: str = ""
    local: str = ""
    prefix: str = ""  # conventional prefix, used when the file has none for ``ns``
    container: str = "Bag"


SIDECAR_FIELDS: tuple[XmpField, ...] = (
    XmpField("Subject", "flat", True, NS_DC, "subject", "dc", "Bag"),
    XmpField("HierarchicalSubject", "pipe", True, NS_LR, "hierarchicalSubject", "lr", "Bag"),
    XmpField("TagsList", "slash", True, NS_DIGIKAM, "TagsList", "digiKam", "Seq"),
    XmpField("LastKeywordXMP", "slash", False, NS_MSPHOTO, "LastKeywordXMP", "MicrosoftPhoto", "Bag"),
)

FIELDS_BY_KEY = {f.key: f for f in SIDECAR_FIELDS}

# Extensions of image files that can share a stem (photo.jpg + photo.CR2 -> photo.xmp): ramtag.formats.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS
RAW_SUFFIXES = RAW_EXTENSIONS

# What a new sidecar copies from the photo's embedded XMP packet: namespace -> property names (None: all).
# Metadata photo managers read, never develop settings (darktable:, crs:) or properties describing the
# file itself (tiff:, exif:, xmpMM:), which would be wrong for, or be applied to, the picture.
SEED_PROPERTIES: dict[str, frozenset[str] | None] = {
    NS_DC: None,  # subject, title, description, creator, rights
    NS_LR: frozenset({"hierarchicalSubject"}),
    NS_DIGIKAM: frozenset({"TagsList", "ColorLabel", "PickLabel"}),
    NS_MSPHOTO: frozenset({"LastKeywordXMP", "Rating"}),
    NS_XMP: frozenset({"Rating", "Label"}),
    "http://ns.microsoft.com/photo/1.2/": None,  # MP:RegionInfo (people, Windows)
    "http://www.metadataworkinggroup.com/schemas/regions/": None,  # mwg-rs:Regions (people)
    "http://www.metadataworkinggroup.com/schemas/keywords/": None,  # mwg-kw:Keywords
    "http://ns.adobe.com/photoshop/1.0/": None,  # Headline, City, Country, Credit, ...
    "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/": None,
    "http://iptc.org/std/Iptc4xmpExt/2008-02-29/": None,
    "http://ns.adobe.com/xap/1.0/rights/": None,
}


# --------------------------------------------------------------------------------------------------
# Parsing and serializing


class _Forbidden(ValueError):
    pass


class _SafeBuilder(expatbuilder.ExpatBuilderNS):
    """minidom's namespace-aware builder, refusing DTDs and entity declarations (no expansion)."""

    def install(self, parser: Any) -> None:
        super().install(parser)

        def forbid(*_args: object) -> None:
            raise _Forbidden("DTD or entity declarations are not allowed in XMP")

        parser.StartDoctypeDeclHandler = forbid
        parser.EntityDeclHandler = forbid
        parser.UnparsedEntityDeclHandler = forbid
        parser.ExternalEntityRefHandler = forbid


def _escape(text: str, attribute: bool) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return text


def _serialize(node: Any, out: list[str]) -> None:
    if node.nodeType == Node.ELEMENT_NODE:
        out.append("<" + node.tagName)
        for name, value in node.attributes.items():
            out.append(f' {name}="{_escape(value, True)}"')
        if not node.childNodes:
            out.append("/>")
            return
        out.append(">")
        for child in node.childNodes:
            _serialize(child, out)
        out.append(f"</{node.tagName}>")
    elif node.nodeType == Node.TEXT_NODE:
        out.append(_escape(node.data, False))
    elif node.nodeType == Node.CDATA_SECTION_NODE:
        out.append(f"<![CDATA[{node.data}]]>")
    elif node.nodeType == Node.COMMENT_NODE:
        out.append(f"<!--{node.data}-->")
    elif node.nodeType == Node.PROCESSING_INSTRUCTION_NODE:
        out.append(f"<?{node.target} {node.data}?>" if node.data else f"<?{node.target}?>")


def _elements(parent: Any) -> list[Any]:
    return [c for c in parent.childNodes if c.nodeType == Node.ELEMENT_NODE]


def _is(el: Any, ns: str, local: str) -> bool:
    return bool(el.namespaceURI == ns and el.localName == local)


def _is_blank(node: Any) -> bool:
    return node is not None and node.nodeType == Node.TEXT_NODE and not node.data.strip()


def _date_or_empty(value: Any) -> str:
    """``value`` when it looks like an XMP (ISO 8601) date, else "" (old sidecars wrote "True")."""
    text = str(value or "").strip()
    return text if text[:4].isdigit() and text[4:5] == "-" else ""


def _text(el: Any) -> str | None:
    """The text of a simple-valued element, or None where it holds elements (a structure)."""
    parts = []
    for c in el.childNodes:
        if c.nodeType in (Node.TEXT_NODE, Node.CDATA_SECTION_NODE):
            parts.append(c.data)
        elif c.nodeType == Node.ELEMENT_NODE:
            return None
    return "".join(parts)


def _indent_of(el: Any) -> str:
    prev = el.previousSibling
    if _is_blank(prev) and "\n" in prev.data:
        return str(prev.data.rsplit("\n", 1)[1])
    depth, p = 0, el.parentNode
    while p is not None and p.nodeType == Node.ELEMENT_NODE:
        depth, p = depth + 1, p.parentNode
    return " " * depth


def _last_element(parent: Any) -> Any:
    """The last element child of ``parent`` or None (walks back from the end: O(1) when appending)."""
    node = parent.lastChild
    while node is not None and node.nodeType != Node.ELEMENT_NODE:
        node = node.previousSibling
    return node


def _append(parent: Any, child: Any) -> None:
    """Append ``child`` as the last element of ``parent``, indented like its siblings.

    Only appends (minidom's insertBefore/removeChild search the child list: appending thousands of
    tags one by one would be quadratic).
    """
    doc = parent.ownerDocument
    prev = _last_element(parent)
    indent = _indent_of(prev) if prev is not None else _indent_of(parent) + " "
    last = parent.lastChild
    if _is_blank(last):  # the closing tag's indentation moves behind the new child
        closing = last.data
        last.data = "\n" + indent
        parent.appendChild(child)
        parent.appendChild(doc.createTextNode(closing))
    else:
        parent.appendChild(doc.createTextNode("\n" + indent))
        parent.appendChild(child)
        parent.appendChild(doc.createTextNode("\n" + _indent_of(parent)))


def _remove(el: Any) -> None:
    """Remove ``el`` together with the whitespace that indented it."""
    parent = el.parentNode
    if _is_blank(el.previousSibling):
        parent.removeChild(el.previousSibling)
    parent.removeChild(el)


def _in_scope(el: Any) -> dict[str, str]:
    """prefix -> namespace declared on ``el`` or its ancestors ("" is the default namespace)."""
    scope: dict[str, str] = {}
    node = el
    while node is not None and node.nodeType == Node.ELEMENT_NODE:
        for attr in node.attributes.values():
            if attr.namespaceURI == NS_XMLNS:
                prefix = "" if attr.name == "xmlns" else attr.localName
                scope.setdefault(prefix, attr.value)
        node = node.parentNode
    return scope


class XmpPacket:
    """A parsed (or new) XMP packet; edits touch only ramtag's keyword items and record."""

    def __init__(self, doc: minidom.Document, xml_decl: bool, bom: bool) -> None:
        self.doc: Any = doc
        self.xml_decl = xml_decl
        self.bom = bom
        root = doc.documentElement
        if root is not None and _is(root, NS_X, "xmpmeta"):
            rdfs = [e for e in _elements(root) if _is(e, NS_RDF, "RDF")]
            if rdfs:
                self.rdf = rdfs[0]
            else:
                self.rdf = doc.createElementNS(NS_RDF, "rdf:RDF")
                self.rdf.setAttributeNS(NS_XMLNS, "xmlns:rdf", NS_RDF)
                _append(root, self.rdf)
        elif root is not None and _is(root, NS_RDF, "RDF"):
            self.rdf = root
        else:
            raise ValueError("the root element is neither x:xmpmeta nor rdf:RDF")
        if not self.descriptions():
            self._new_description()

    # -- construction

    @classmethod
    def parse(cls, data: bytes) -> XmpPacket:
        """Parse sidecar bytes; raises ValueError (with the reason) for anything that is not XMP."""
        if len(data) > MAX_SIDECAR_BYTES:
            raise ValueError(f"larger than {MAX_SIDECAR_BYTES // 2**20} MiB")
        bom = data.startswith(b"\xef\xbb\xbf")
        body = data[3:] if bom else data
        try:
            doc = _SafeBuilder().parseString(body)
        except (ExpatError, _Forbidden) as e:
            raise ValueError(str(e)) from None
        stack = [(doc.documentElement, 1)] if doc.documentElement is not None else []
        while stack:
            el, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise ValueError(f"elements nested more than {MAX_DEPTH} levels deep")
            stack.extend((c, depth + 1) for c in _elements(el))
        return cls(doc, xml_decl=body.lstrip().startswith(b"<?xml"), bom=bom)

    @classmethod
    def new(cls) -> XmpPacket:
        text = (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="ramtag">\n'
            ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            '  <rdf:Description rdf:about=""/>\n'
            " </rdf:RDF>\n"
            "</x:xmpmeta>\n"
            '<?xpacket end="w"?>'
        )
        return cls.parse(text.encode("utf-8"))

    def to_bytes(self) -> bytes:
        out: list[str] = []
        if self.xml_decl:
            out.append('<?xml version="1.0" encoding="UTF-8"?>\n')
        for child in self.doc.childNodes:
            if child.nodeType == Node.DOCUMENT_TYPE_NODE:
                continue
            _serialize(child, out)
            out.append("\n")
        data = "".join(out).encode("utf-8")
        return b"\xef\xbb\xbf" + data if self.bom else data

    # -- navigation

    def descriptions(self) -> list[Any]:
        return [e for e in _elements(self.rdf) if _is(e, NS_RDF, "Description")]

    def _new_description(self) -> Any:
        rdf_p = self._prefix(self.rdf, NS_RDF, "rdf", declare_on=None)
        desc = self.doc.createElementNS(NS_RDF, _qname(rdf_p, "Description"))
        desc.setAttributeNS(NS_RDF, _qname(rdf_p, "about"), "")
        _append(self.rdf, desc)
        return desc

    def _prefix(self, el: Any, ns: str, preferred: str, declare_on: Any | None) -> str:
        """The prefix for ``ns`` in scope at ``el``; declares ``preferred`` on ``declare_on`` if none."""
        scope = _in_scope(el)
        for prefix, uri in scope.items():
            if uri == ns:
                return prefix
        if declare_on is None:
            raise ValueError(f"namespace {ns} is not declared")
        prefix, n = preferred, 1
        while prefix in scope:
            prefix, n = f"{preferred}{n}", n + 1
        declare_on.setAttributeNS(NS_XMLNS, f"xmlns:{prefix}", ns)
        return prefix

    def _find(self, ns: str, local: str) -> tuple[Any, Any] | None:
        """(description, property element) of the first ``ns:local`` property element, if any."""
        for desc in self.descriptions():
            for el in _elements(desc):
                if _is(el, ns, local):
                    return desc, el
        return None

    def _attribute_value(self, ns: str, local: str) -> str | None:
        for desc in self.descriptions():
            if desc.hasAttributeNS(ns, local):
                return str(desc.getAttributeNS(ns, local))
        return None

    # -- array properties

    def values(self, ns: str, local: str) -> list[str] | None:
        """Items of an array property (None where the property is absent)."""
        found = self._find(ns, local)
        if found is None:
            value = self._attribute_value(ns, local)
            return None if value is None else [value]
        prop = found[1]
        container = _container(prop)
        if container is None:
            text = _text(prop)
            if text is None:
                raise ValueError(f"{prop.tagName} has a structure where a list was expected")
            return [text.strip()] if text.strip() else []
        return [t for t in (_text(li) for li in _items(container)) if t is not None]

    def set_values(self, field: XmpField, final: list[str]) -> None:
        """Make the property's item set equal ``final`` with minimal edits (kept items stay in place)."""
        current = self.values(field.ns, field.local)
        if current is not None and set(current) == set(final):
            return
        if current is None and not final:
            return
        found = self._find(field.ns, field.local)
        if found is None:
            desc = self._home()
            attr_value = self._attribute_value(field.ns, field.local)
            if attr_value is not None:  # a (non-standard) attribute-style value becomes an array
                for d in self.descriptions():
                    if d.hasAttributeNS(field.ns, field.local):
                        d.removeAttributeNS(field.ns, field.local)
            prefix = self._prefix(desc, field.ns, field.prefix, declare_on=desc)
            prop = self.doc.createElementNS(field.ns, _qname(prefix, field.local))
            _append(desc, prop)
        else:
            desc, prop = found
        container = _container(prop)
        if container is None:  # a simple value (or nothing) where a list belongs: make it a list
            old = (_text(prop) or "").strip()
            for c in list(prop.childNodes):
                prop.removeChild(c)
            rdf_p = self._prefix(desc, NS_RDF, "rdf", declare_on=None)
            container = self.doc.createElementNS(NS_RDF, _qname(rdf_p, field.container))
            _append(prop, container)
            if old:
                self._add_item(container, old)
        wanted = set(final)
        seen: set[str] = set()
        for li in _items(container):
            value = _text(li)
            if value is None:
                continue
            if value in wanted:
                seen.add(value)
            else:
                _remove(li)
        for value in final:
            if value not in seen:
                self._add_item(container, value)
                seen.add(value)
        if not _items(container):
            _remove(prop)

    def _add_item(self, container: Any, value: str) -> None:
        rdf_p = self._prefix(container, NS_RDF, "rdf", declare_on=None)
        li = self.doc.createElementNS(NS_RDF, _qname(rdf_p, "li"))
        li.appendChild(self.doc.createTextNode(value))
        _append(container, li)

    def _home(self) -> Any:
        """The Description new properties go to: the one holding dc:subject, else the first."""
        found = self._find(NS_DC, "subject")
        return found[0] if found else self.descriptions()[0]

    # -- simple and language-alternative properties (seeding a new sidecar)

    def simple(self, ns: str, local: str) -> str | None:
        """The text of a simple property (element or attribute), None where absent or a structure."""
        found = self._find(ns, local)
        if found is None:
            return self._attribute_value(ns, local)
        text = _text(found[1])
        return None if text is None else text.strip()

    def set_simple(self, ns: str, local: str, prefix: str, value: str) -> None:
        """Add a simple property (only used where it is absent)."""
        desc = self._home()
        p = self._prefix(desc, ns, prefix, declare_on=desc)
        prop = self.doc.createElementNS(ns, _qname(p, local))
        prop.appendChild(self.doc.createTextNode(value))
        _append(desc, prop)

    def lang_default(self, ns: str, local: str) -> str | None:
        """The x-default (else first) item of a language alternative such as dc:title."""
        found = self._find(ns, local)
        if found is None:
            return self._attribute_value(ns, local)
        container = _container(found[1])
        if container is None:
            text = _text(found[1])
            return text.strip() if text and text.strip() else None
        items = _items(container)
        for li in items:
            if li.getAttributeNS(NS_XML, "lang") == "x-default":
                return _text(li)
        return _text(items[0]) if items else None

    def set_lang_default(self, ns: str, local: str, prefix: str, value: str) -> None:
        """Set the x-default item of a language alternative (other languages stay)."""
        found = self._find(ns, local)
        if found is not None and _container(found[1]) is None:
            _remove(found[1])  # a plain value where an rdf:Alt belongs: replaced
            found = None
        if found is None:
            desc = self._home()
            p = self._prefix(desc, ns, prefix, declare_on=desc)
            prop = self.doc.createElementNS(ns, _qname(p, local))
            _append(desc, prop)
            rdf_p = self._prefix(desc, NS_RDF, "rdf", declare_on=None)
            _append(prop, self.doc.createElementNS(NS_RDF, _qname(rdf_p, "Alt")))
        else:
            desc, prop = found
        container = _container(prop)
        for li in _items(container):
            if li.getAttributeNS(NS_XML, "lang") == "x-default":
                for c in list(li.childNodes):
                    li.removeChild(c)
                li.appendChild(self.doc.createTextNode(value))
                return
        rdf_p = self._prefix(container, NS_RDF, "rdf", declare_on=None)
        li = self.doc.createElementNS(NS_RDF, _qname(rdf_p, "li"))
        li.setAttributeNS(NS_XML, "xml:lang", "x-default")
        li.appendChild(self.doc.createTextNode(value))
        _append(container, li)

    def copy_properties(self, source: XmpPacket, wanted: dict[str, frozenset[str] | None]) -> None:
        """Copy ``source``'s properties whose namespace (and name) ``wanted`` lists, structures included,
        into this packet's home Description; properties this packet already has are left alone."""
        desc = self._home()

        def listed(ns: str | None, local: str) -> bool:
            names = wanted.get(ns or "", frozenset())
            return names is None or local in names

        for sdesc in source.descriptions():
            for attr in list(sdesc.attributes.values()):
                ns, local = attr.namespaceURI, attr.localName
                if ns in (NS_XMLNS, NS_RDF) or not listed(ns, local) or self._has(ns, local):
                    continue
                if not self._declare(desc, [(attr.prefix or "", ns)]):
                    continue
                desc.setAttributeNS(ns, attr.name, attr.value)
            for el in _elements(sdesc):
                if not listed(el.namespaceURI, el.localName) or self._has(el.namespaceURI, el.localName):
                    continue
                if not self._declare(desc, _prefixes_used(el)):
                    log.debug("not copying %s: its prefixes clash with the sidecar's", el.tagName)
                    continue
                _append(desc, self.doc.importNode(el, True))

    def _has(self, ns: str, local: str) -> bool:
        return self._find(ns, local) is not None or self._attribute_value(ns, local) is not None

    def _declare(self, desc: Any, needed: list[tuple[str, str]]) -> bool:
        """Declare each (prefix, namespace) on ``desc`` unless in scope; False on a prefix clash."""
        scope = _in_scope(desc)
        for prefix, ns in needed:
            if scope.get(prefix) == ns:
                continue
            if prefix in scope or not prefix:
                return False
        for prefix, ns in needed:
            if prefix not in scope:
                desc.setAttributeNS(NS_XMLNS, f"xmlns:{prefix}", ns)
                scope[prefix] = ns
        return True

    def digest(self) -> str:
        """A digest of the packet's content apart from ramtag's record, namespace declarations,
        prefixes and whitespace (to tell whether anything changed since ramtag seeded a sidecar)."""

        def canon(node: Any) -> Any:
            if node.nodeType == Node.ELEMENT_NODE:
                if node.namespaceURI == RAMTAG_NS:
                    return None
                attrs = sorted(
                    (a.namespaceURI or "", a.localName, a.value)
                    for a in node.attributes.values()
                    if a.namespaceURI not in (NS_XMLNS, RAMTAG_NS)
                )
                kids = [c for c in (canon(ch) for ch in node.childNodes) if c is not None]
                return (node.namespaceURI, node.localName, attrs, kids)
            if node.nodeType in (Node.TEXT_NODE, Node.CDATA_SECTION_NODE):
                return node.data.strip() or None
            return None

        return hashlib.sha256(repr(canon(self.rdf)).encode("utf-8")).hexdigest()[:32]

    def seed(self, meta: EmbeddedMetadata, image: Path) -> None:
        """Fill a new packet from the photo's embedded metadata (see the module docstring for the rules)."""
        if meta.xmp:
            try:
                self.copy_properties(XmpPacket.parse(meta.xmp), SEED_PROPERTIES)
            except ValueError as e:
                log.warning(
                    "%s: its embedded XMP is unreadable (%s); the new sidecar starts from its IPTC", image, e
                )
        # Keywords, per MWG: the XMP unless there is none or the IPTC digest shows the IPTC was changed
        # later by a tool that left the XMP alone; IPTC's 64-byte limit recovered from the XMP.
        subject = self.values(NS_DC, "subject")
        if meta.iptc_keywords and (subject is None or meta.iptc_digest_matches is False):
            words = _recover_truncated(meta.iptc_keywords, subject or [], 64)
            self.set_values(FIELDS_BY_KEY["Subject"], list(dict.fromkeys(words)))
        elif subject is None and meta.exif_keywords:
            self.set_values(FIELDS_BY_KEY["Subject"], list(dict.fromkeys(meta.exif_keywords)))
        # Description, per MWG: a non-blank EXIF ImageDescription first, then XMP / IPTC as for keywords.
        description = self.lang_default(NS_DC, "description")
        if meta.exif_description:
            if description != meta.exif_description:
                self.set_lang_default(NS_DC, "description", "dc", meta.exif_description)
        elif meta.iptc_caption and (description is None or meta.iptc_digest_matches is False):
            [caption] = _recover_truncated([meta.iptc_caption], [description or ""], 2000)
            self.set_lang_default(NS_DC, "description", "dc", caption)
        if self.lang_default(NS_DC, "title") is None and (meta.iptc_title or meta.exif_title):
            self.set_lang_default(NS_DC, "title", "dc", meta.iptc_title or meta.exif_title or "")
        if self.simple(NS_XMP, "Rating") is None and meta.exif_rating:
            self.set_simple(NS_XMP, "Rating", "xmp", str(meta.exif_rating))

    # -- ramtag's record

    def read_record(self) -> RamtagRecord | None:
        props: dict[str, Any] = {}
        for desc in self.descriptions():
            for attr in desc.attributes.values():
                if attr.namespaceURI == RAMTAG_NS:
                    props.setdefault(attr.localName, attr.value)
            for el in _elements(desc):
                if el.namespaceURI == RAMTAG_NS:
                    container = _container(el)
                    if container is not None:
                        props.setdefault(el.localName, [_text(li) or "" for li in _items(container)])
                    else:
                        props.setdefault(el.localName, (_text(el) or "").strip())
        if not props:
            return None

        def as_list(v: Any) -> list[str]:
            return list(v) if isinstance(v, list) else ([v] if v else [])

        return RamtagRecord(
            tags=as_list(props.get("Tags")),
            added={k[len("Added") :]: as_list(v) for k, v in props.items() if k.startswith("Added")},
            model=str(props.get("Model", "") or ""),
            date=str(props.get("Date", "") or ""),
            # an XMP date since issue 13; older sidecars say "True"
            created=str(props.get("Created", "") or "").strip().lower() not in ("", "false"),
            created_date=_date_or_empty(props.get("Created")),
            filled={k[len("Filled") :]: as_list(v) for k, v in props.items() if k.startswith("Filled")},
            user_roots=as_list(props.get("UserRoots")),
            seeded=str(props.get("Seeded", "") or ""),
        )

    def remove_record(self) -> None:
        """Remove every ramtag property and ramtag namespace declaration."""
        for desc in self.descriptions():
            for el in _elements(desc):
                if el.namespaceURI == RAMTAG_NS:
                    _remove(el)
            for attr in list(desc.attributes.values()):
                if attr.namespaceURI == RAMTAG_NS:
                    desc.removeAttributeNode(attr)
        stack = [self.doc.documentElement]
        while stack:
            el = stack.pop()
            for attr in list(el.attributes.values()):
                if attr.namespaceURI == NS_XMLNS and attr.value == RAMTAG_NS:
                    el.removeAttributeNode(attr)
            stack.extend(_elements(el))

    def write_record(self, record: RamtagRecord) -> None:
        self.remove_record()
        desc = self._home()
        p = self._prefix(desc, RAMTAG_NS, "ramtag", declare_on=desc)
        rdf_p = self._prefix(desc, NS_RDF, "rdf", declare_on=None)
        lists = (
            {"Tags": record.tags}
            | {f"Added{k}": v for k, v in record.added.items()}
            | {f"Filled{k}": v for k, v in record.filled.items()}
            | {"UserRoots": record.user_roots}
        )
        for name, values in lists.items():
            if not values:
                continue
            prop = self.doc.createElementNS(RAMTAG_NS, _qname(p, name))
            _append(desc, prop)
            bag = self.doc.createElementNS(NS_RDF, _qname(rdf_p, "Bag"))
            _append(prop, bag)
            for v in values:
                self._add_item(bag, v)
        created = (record.created_date or record.date or utc_now()) if record.created else ""
        simple = {"Model": record.model, "Date": record.date, "Created": created, "Seeded": record.seeded}
        for name, text in simple.items():
            if text:
                prop = self.doc.createElementNS(RAMTAG_NS, _qname(p, name))
                prop.appendChild(self.doc.createTextNode(text))
                _append(desc, prop)

    def is_empty(self) -> bool:
        """True when the packet holds no property at all (only rdf:about and declarations)."""
        root = self.doc.documentElement
        if root is not self.rdf and any(e is not self.rdf for e in _elements(root)):
            return False
        for el in _elements(self.rdf):
            if not _is(el, NS_RDF, "Description") or _elements(el):
                return False
            for attr in el.attributes.values():
                if attr.namespaceURI != NS_XMLNS and not _is(attr, NS_RDF, "about"):
                    return False
        return True

    def snapshot(self, fields: tuple[XmpField, ...]) -> tuple[Any, ...]:
        return tuple(tuple(sorted(self.values(f.ns, f.local) or ())) for f in fields)


def _qname(prefix: str, local: str) -> str:
    return f"{prefix}:{local}" if prefix else local


def _container(prop: Any) -> Any | None:
    for el in _elements(prop):
        if el.namespaceURI == NS_RDF and el.localName in ("Bag", "Seq", "Alt"):
            return el
    return None


def _items(container: Any) -> list[Any]:
    return [e for e in _elements(container) if _is(e, NS_RDF, "li")]


def _prefixes_used(el: Any) -> list[tuple[str, str]]:
    """(prefix, namespace) of every element and attribute in ``el``'s subtree that it does not declare."""
    out: dict[str, str] = {}
    declared: set[str] = set()
    stack = [el]
    while stack:
        node = stack.pop()
        for attr in node.attributes.values():
            if attr.namespaceURI == NS_XMLNS:
                declared.add("" if attr.name == "xmlns" else attr.localName)
            elif attr.namespaceURI and attr.prefix not in (None, "xml"):
                out.setdefault(attr.prefix, attr.namespaceURI)
        if node.namespaceURI:
            out.setdefault(node.prefix or "", node.namespaceURI)
        stack.extend(_elements(node))
    return [(p, ns) for p, ns in out.items() if p not in declared]


def _recover_truncated(iptc: list[str], xmp: list[str], limit: int) -> list[str]:
    """IPTC values cut at the format's byte limit, completed from the XMP value they begin (MWG)."""
    out = []
    for value in iptc:
        if len(value.encode("utf-8")) >= limit - 3:
            value = next((x for x in xmp if x.startswith(value)), value)
        out.append(value)
    return out


# --------------------------------------------------------------------------------------------------
# Merge and untag (pure: bytes in, bytes out)


def parse_sidecar(data: bytes, path: Path) -> XmpPacket:
    """Parse an existing sidecar; raises :class:`SidecarError` naming the file when it is not XMP."""
    try:
        return XmpPacket.parse(data)
    except ValueError as e:
        raise SidecarError(
            f"{path}: not a valid XMP sidecar ({e}); left untouched - fix or remove it, "
            "or rerun with --repair-sidecars to keep it as .bak and write a new one"
        ) from None


def _apply_keywords(
    packet: XmpPacket,
    old: RamtagRecord | None,
    record: RamtagRecord,
    names: list[str],
    hierarchy_root: str,
    *,
    fill: bool,
) -> None:
    """Set every keyword property of ``packet`` as :func:`plan_fields` plans it."""
    current = {f.key: packet.values(f.ns, f.local) for f in SIDECAR_FIELDS}
    final = plan_fields(SIDECAR_FIELDS, current, old, record, names, hierarchy_root, fill=fill)
    for key, values in final.items():
        packet.set_values(FIELDS_BY_KEY[key], values)


def merge_tags(
    data: bytes | None,
    names: list[str],
    *,
    path: Path,
    hierarchy_root: str = "ramtag",
    model: str = "",
    date: str | None = None,
    created: bool | None = None,
    embedded: EmbeddedMetadata | None = None,
) -> tuple[bytes | None, RamtagRecord]:
    """Merge ramtag's tags ``names`` into sidecar bytes ``data`` (None: no sidecar yet).

    A new sidecar starts from ``embedded`` (the photo's own metadata) where given. Returns
    ``(new_bytes, record)``; ``new_bytes`` is None when nothing would change (re-run with the same
    tags, or no tags and no sidecar). Raises :class:`SidecarError` for a malformed sidecar.
    """
    if data is None and not names:
        return None, RamtagRecord()
    seeded = ""
    if data is None:
        packet = XmpPacket.new()
        if embedded is not None and not embedded.is_empty():
            packet.seed(embedded, path)
            seeded = packet.digest()
    else:
        packet = parse_sidecar(data, path)
    try:
        old = packet.read_record()
        before = packet.snapshot(SIDECAR_FIELDS)
        record = RamtagRecord(
            tags=list(names),
            model=model,
            date=date or utc_now(),
            created=(data is None) if created is None else created,
            seeded=seeded if old is None else old.seeded,
        )
        if old is not None and created is None:
            record.created, record.created_date = old.created, old.created_date
        elif record.created:
            record.created_date = record.date
        _apply_keywords(packet, old, record, names, hierarchy_root, fill=True)
        if before == packet.snapshot(SIDECAR_FIELDS) and record.same_content(old):
            return None, old if old is not None else record
        packet.write_record(record)
        return packet.to_bytes(), record
    except ValueError as e:
        raise SidecarError(f"{path}: cannot merge keywords ({e}); left untouched - fix it by hand") from None


def remove_tags(data: bytes, *, path: Path) -> tuple[bytes | None, RamtagRecord | None, bool]:
    """Take out what ramtag wrote: ``(new_bytes, old_record, delete_file)``.

    ``new_bytes`` is None when the sidecar holds nothing of ramtag's; ``delete_file`` is True when
    ramtag created the sidecar and nothing else is left in it than what it copied from the photo.
    """
    packet = parse_sidecar(data, path)
    try:
        old = packet.read_record()
        if old is None:
            return None, None, False
        _apply_keywords(packet, old, RamtagRecord(), [], "", fill=False)
        packet.remove_record()
        unchanged = packet.is_empty() or (bool(old.seeded) and packet.digest() == old.seeded)
        return packet.to_bytes(), old, old.created and unchanged
    except ValueError as e:
        raise SidecarError(f"{path}: cannot remove ramtag's keywords ({e}); left untouched") from None


# --------------------------------------------------------------------------------------------------
# Which sidecar belongs to which image


def _existing(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.stem + ".XMP")):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: Path) -> bytes | None:
    """The bytes of an existing sidecar (None when there is none), at most ``MAX_SIDECAR_BYTES``: a larger
    file raises :class:`SidecarError` and is left alone (the read is bounded, whatever the file is)."""
    if not path.exists():
        return None
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the run, a device never end
        raise SidecarError(f"{printable(path)}: not a regular file; left alone - move it away")
    with open(path, "rb") as f:
        data = f.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(
            f"{printable(path)}: larger than {MAX_SIDECAR_BYTES // 2**20} MB, which no real sidecar reaches; "
            "left alone - check what it is, or move it away to let ramtag write a new one"
        )
    return data


def _backup_path(path: Path) -> Path:
    candidate, n = path.with_name(path.name + ".bak"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{n}.bak"), n + 1
    return candidate


class SidecarLocator:
    """Finds the sidecar of an image: an existing one under either name, else the configured naming.

    ``photo.xmp`` (Adobe naming) is shared by every image with the stem ``photo``; it belongs to one
    of them (a RAW file first, then the alphabetically first extension) and the others use
    ``photo.<ext>.xmp``. Directory listings are cached (thread-safe, a few folders).
    """

    def __init__(self, naming: str = "ext", cache_dirs: int = 16) -> None:
        if naming not in ("ext", "replace"):
            raise ValueError(f"sidecar naming must be 'ext' or 'replace', not {naming!r}")
        self.naming = naming
        self._cache: OrderedDict[Path, dict[str, list[str]]] = OrderedDict()
        self._cache_dirs = cache_dirs
        self._lock = threading.Lock()

    def _stems(self, directory: Path) -> dict[str, list[str]]:
        with self._lock:
            if directory in self._cache:
                self._cache.move_to_end(directory)
                return self._cache[directory]
        stems: dict[str, list[str]] = {}
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    stem, suffix = os.path.splitext(entry.name)
                    if suffix.lower() in IMAGE_SUFFIXES:
                        stems.setdefault(stem.lower(), []).append(entry.name)
        except OSError:
            pass
        with self._lock:
            self._cache[directory] = stems
            while len(self._cache) > self._cache_dirs:
                self._cache.popitem(last=False)
        return stems

    def owner_of_shared(self, image: Path) -> str:
        """File name of the image that owns ``<stem>.xmp`` among those sharing ``image``'s stem."""
        names = set(self._stems(image.parent).get(image.stem.lower(), [])) | {image.name}

        def rank(name: str) -> tuple[int, str]:
            suffix = os.path.splitext(name)[1].lower()
            return (0 if suffix in RAW_SUFFIXES else 1, suffix + name)

        return min(names, key=rank)

    def locate(self, image: Path) -> tuple[Path, str]:
        """``(sidecar path, note)``; the note (else "") says why the other naming was used."""
        ext_path = image.with_name(image.name + ".xmp")
        shared = image.with_name(image.stem + ".xmp")
        found = _existing(ext_path)
        if found is not None:
            return found, ""
        found_shared = _existing(shared)
        if found_shared is None and self.naming == "ext":
            return ext_path, ""
        owner = self.owner_of_shared(image)
        if owner == image.name:
            return found_shared or shared, ""
        note = f"{image.name} and {owner} share {shared.name}; writing {ext_path.name} for {image.name}"
        return ext_path, note

    def targets(self, image: Path) -> tuple[list[Path], str]:
        """The sidecars to write for ``image``: every existing one that belongs to it (``photo.xmp`` and
        ``photo.jpg.xmp`` are both kept up to date where both exist), else the one :meth:`locate` names."""
        existing = self.sidecars_of(image)
        if existing:
            return existing, ""
        path, note = self.locate(image)
        return [path], note

    def sidecars_of(self, image: Path) -> list[Path]:
        """Existing sidecars that belong to ``image`` (for untag)."""
        out = []
        found = _existing(image.with_name(image.name + ".xmp"))
        if found is not None:
            out.append(found)
        shared = _existing(image.with_name(image.stem + ".xmp"))
        if shared is not None and self.owner_of_shared(image) == image.name:
            out.append(shared)
        return out


# --------------------------------------------------------------------------------------------------
# The writer


class XmpSidecarWriter:
    """Writes each image's tags into its XMP sidecar (merging, atomically). Thread-safe.

    Image files are never opened for writing. ``repair_sidecars``: a sidecar that is not valid XML is
    copied to ``<sidecar>.bak`` and replaced by a fresh one instead of being reported.
    """

    def __init__(
        self,
        *,
        sidecar_name: str = "ext",
        hierarchy_root: str = "ramtag",
        lang: str = "en",
        dry_run: bool = False,
        repair_sidecars: bool = False,
        model: str = "",
    ) -> None:
        self.locator = SidecarLocator(sidecar_name)
        self.hierarchy_root = hierarchy_root
        self.lang = lang
        self.dry_run = dry_run
        self.repair_sidecars = repair_sidecars
        self.model = model
        self._lock = threading.Lock()
        self._warned: set[Path] = set()
        self._warned_names: set[str] = set()
        self._exiftool: Any = None  # ExiftoolSession, started when a file needs it
        self.roots: list[Path] | None = None  # where a symlinked sidecar may lead (None: the image folder)

    def write(self, result: ImageTags) -> WriteOutcome:
        if result.error is not None:
            return WriteOutcome(result.path, None, "skipped", result.error)
        if result.path is None:
            return WriteOutcome(None, None, "skipped", "in-memory image: no file to write a sidecar for")
        image = Path(result.path)
        with self._lock:
            names = clean_tag_names(result.tag_names(self.lang), self._warned_names)
            sidecars, note = self.locator.targets(image)
            if note and sidecars[0] not in self._warned:
                self._warned.add(sidecars[0])
                log.warning(note)
            outcomes: list[WriteOutcome] = []
            failed: RamtagError | None = None
            # the lock orders concurrent ramtag runs writing the same photo (read-merge-write)
            with contextlib.nullcontext() if self.dry_run else file_lock(image):
                for sidecar in sidecars:
                    try:
                        outcomes.append(self._write(image, sidecar, names, note))
                    except SidecarError as e:  # the image's other sidecar is still brought up to date
                        failed = failed or e
                    except OSError as e:  # disk full, permission, name too long: one line
                        failed = failed or OutputError.from_os(e, sidecar)
            if failed is not None:
                raise failed
            return _combined(outcomes)

    def _write(self, image: Path, sidecar: Path, names: list[str], note: str) -> WriteOutcome:
        try:
            data = read_sidecar(sidecar)
        except OSError as e:
            raise OutputError.from_os(e, sidecar, "cannot read it") from None
        backup: Path | None = None
        try:
            new, record = merge_tags(
                data,
                names,
                path=sidecar,
                hierarchy_root=self.hierarchy_root,
                model=self.model,
                embedded=self._embedded(image, data),
            )
        except SidecarError:
            if not self.repair_sidecars or data is None:
                raise
            backup = _backup_path(sidecar)
            new, record = merge_tags(
                None,
                names,
                path=sidecar,
                hierarchy_root=self.hierarchy_root,
                model=self.model,
                created=False,
                embedded=self._embedded(image, None),
            )
        tags = tuple(names)
        extra = f" ({note})" if note else ""
        fp = record.fingerprint()  # what the sidecar holds of ramtag's (kept by the catalog)
        if new is None:  # the same in a dry run: "dry-run" announces only writes a real run makes
            why = "no tag above threshold (no sidecar)" if data is None else "up to date"
            return WriteOutcome(image, sidecar, "unchanged", f"{sidecar}: {why}{extra}", tags, fp)
        if self.dry_run:
            what = f"would write {len(names)} tags"
            if backup is not None:
                what += f"; would keep the malformed sidecar as {backup.name}"
            return WriteOutcome(image, sidecar, "dry-run", f"{sidecar}: {what}{extra}", tags)
        if backup is not None:
            shutil.copy2(sidecar, backup)
            log.warning("%s was not valid XML; kept it as %s and wrote a new sidecar", sidecar, backup)
            extra += f" (malformed sidecar kept as {backup.name})"
        atomic_write_bytes(sidecar, new, within=self.roots or [image.parent])
        return WriteOutcome(image, sidecar, "written", f"{sidecar}: {len(names)} tags{extra}", tags, fp)

    def _embedded(self, image: Path, sidecar_data: bytes | None) -> EmbeddedMetadata | None:
        """The photo's own metadata, read only where a new sidecar is about to be created."""
        if sidecar_data is not None or not image.is_file():
            return None
        return read_embedded(image, self._exiftool_xmp)

    def _exiftool_xmp(self, image: Path) -> bytes | None:
        """The XMP packet of a file Pillow cannot open (CR3, RAF, HEIC, ...), through one long-lived
        exiftool process started on first need; None where exiftool is not installed."""
        from ramtag.writers.exiftool_session import ExiftoolSession, find_exiftool

        if self._exiftool is None:
            if find_exiftool() is None:
                return None
            self._exiftool = ExiftoolSession(timeout=30.0)
        out, _, status = self._exiftool.execute("-b", "-XMP", os.fsencode(os.path.abspath(image)))
        return out.encode("utf-8") if status == 0 and out.strip() else None

    def close(self) -> None:
        with self._lock:
            if self._exiftool is not None:
                self._exiftool.close()
                self._exiftool = None


def _combined(outcomes: list[WriteOutcome]) -> WriteOutcome:
    """One outcome for an image whose two sidecars were both written."""
    if len(outcomes) == 1:
        return outcomes[0]
    written = [o for o in outcomes if o.action == "written"]
    first = written[0] if written else outcomes[0]
    message = "; ".join(o.message for o in outcomes)
    return WriteOutcome(first.path, first.target, first.action, message, first.tags)


def untag_sidecar(sidecar: Path, *, image: Path | None = None, dry_run: bool = False) -> WriteOutcome:
    """Remove ramtag's keywords and record from one sidecar (deleting it if ramtag created it and
    nothing else is left). Raises :class:`SidecarError` for a malformed sidecar."""
    lock_on = image if image is not None and image.exists() else sidecar  # the same lock as tagging takes
    with contextlib.nullcontext() if dry_run else file_lock(lock_on):
        return _untag_sidecar(sidecar, image=image, dry_run=dry_run)


def _untag_sidecar(sidecar: Path, *, image: Path | None, dry_run: bool) -> WriteOutcome:
    try:
        data = read_sidecar(sidecar)
    except OSError as e:
        raise OutputError.from_os(e, sidecar, "cannot read it") from None
    if data is None:
        return WriteOutcome(image or sidecar, sidecar, "skipped", f"{printable(sidecar)}: no such file")
    new, old, delete = remove_tags(data, path=sidecar)
    subject = image if image is not None else sidecar
    if new is None or old is None:
        return WriteOutcome(subject, sidecar, "unchanged", f"{sidecar}: no ramtag tags")
    tags = tuple(old.tags)
    if dry_run:
        what = "would delete it" if delete else f"would remove {len(tags)} tags"
        return WriteOutcome(subject, sidecar, "dry-run", f"{sidecar}: {what}", tags)
    if delete:
        sidecar.unlink()
        return WriteOutcome(subject, sidecar, "deleted", f"{sidecar}: deleted (created by ramtag)", tags)
    try:
        atomic_write_bytes(sidecar, new, within=[sidecar.parent])
    except OSError as e:
        raise OutputError.from_os(e, sidecar) from None
    return WriteOutcome(subject, sidecar, "written", f"{sidecar}: removed {len(tags)} tags", tags)
