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

Merging never clobbers: the document is parsed with lxml (libxml2), which keeps every element,
attribute, prefix, namespace declaration, comment, CDATA section and ``<?xpacket?>`` instruction (and
escapes newlines in attribute values when writing them back); only the keyword ``rdf:li`` items and
ramtag's record are added or removed. Files with a DTD or entity declarations are refused before
lxml sees them, and its parser neither resolves entities nor loads anything, so no entity expansion
can happen. A sidecar that is not valid XMP raises :class:`SidecarError` and is
never overwritten (``repair_sidecars=True`` keeps it as ``*.bak`` and starts a fresh one).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

from lxml import etree

from ramtag.errors import OutputError, RamtagError, SidecarError, printable
from ramtag.formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from ramtag.results import ImageTags
from ramtag.writers.atomic import AtomicBatch, PendingCommit, atomic_write_bytes
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
from ramtag.writers.lock import HeldLock, acquire_lock, fcntl, file_lock

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
#
# lxml (libxml2) is the document model: it keeps every element, attribute, prefix, namespace declaration,
# comment, processing instruction and CDATA section, and parses and serializes in C (the standard
# library's minidom built and walked in Python). Whitespace lives in ``.text`` (before an element's
# first child) and ``.tail`` (after an element), so the indentation helpers below read and write those.


class _Forbidden(ValueError):
    pass


def _forbid(*_args: object) -> int:
    raise _Forbidden("DTD or entity declarations are not allowed in XMP")


def _check(body: bytes) -> None:
    """Refuse DTDs and entity declarations, and report malformed XML, with expat (the parser ramtag
    used before lxml, so the reasons read as they did)."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid
    parser.Parse(body, True)


_PARSERS = threading.local()  # an lxml parser is used by one thread at a time


def _parser() -> Any:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_blank_text=False,
            remove_comments=False,
            remove_pis=False,
            strip_cdata=False,
        )
    return parser


# an element MAX_DEPTH + 1 levels down (libxml2's own limit is 256)
_TOO_DEEP = etree.XPath("boolean(/" + "*/" * MAX_DEPTH + "*)")
# ramtag's attributes of an element, found in C (a Lightroom Description has hundreds of attributes)
_RAMTAG_ATTRS = etree.XPath(f"@*[namespace-uri()='{RAMTAG_NS}']")
_DECLARED = re.compile(rb"xmlns:([^\s=/>]+)\s*=")
_DEFAULT_DECLARED = re.compile(rb"xmlns\s*=")


def _clark(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _ns(el: Any) -> str | None:
    """An element's namespace URI (None where it has none); ``el`` may be a comment or PI (None)."""
    tag = el.tag
    if not isinstance(tag, str) or tag[:1] != "{":
        return None
    return str(tag[1 : tag.index("}")])


def _local(tag: str) -> str:
    """The local name of a Clark-notation ``{ns}local`` tag or attribute key."""
    return tag.rpartition("}")[2]


def _qualified(el: Any) -> str:
    return _qname(el.prefix or "", _local(el.tag))


def _elements(parent: Any) -> list[Any]:
    return [c for c in parent if isinstance(c.tag, str)]


def _is(el: Any, ns: str, local: str) -> bool:
    return bool(el.tag == _clark(ns, local))


def _is_blank(text: str | None) -> bool:
    return text is not None and not text.strip()


def _date_or_empty(value: Any) -> str:
    """``value`` when it looks like an XMP (ISO 8601) date, else "" (old sidecars wrote "True")."""
    text = str(value or "").strip()
    return text if text[:4].isdigit() and text[4:5] == "-" else ""


def _text(el: Any) -> str | None:
    """The text of a simple-valued element, or None where it holds elements (a structure)."""
    parts = [el.text or ""]
    for c in el:
        if isinstance(c.tag, str):
            return None
        parts.append(c.tail or "")  # the text after a comment or PI inside the value
    return "".join(parts)


def _before(el: Any) -> str | None:
    """The text between ``el`` and the node before it (None: none, or ``el`` is at the top level)."""
    prev = el.getprevious()
    if prev is not None:
        return prev.tail
    parent = el.getparent()
    return None if parent is None else parent.text


def _set_before(el: Any, text: str | None) -> None:
    prev = el.getprevious()
    if prev is not None:
        prev.tail = text
    else:
        el.getparent().text = text


def _indent_of(el: Any) -> str:
    prev = _before(el)
    if prev is not None and _is_blank(prev) and "\n" in prev:
        return prev.rsplit("\n", 1)[1]
    return " " * sum(1 for _ in el.iterancestors())


def _last_element(parent: Any) -> Any:
    """The last element child of ``parent`` or None (walks back from the end)."""
    for node in reversed(parent):
        if isinstance(node.tag, str):
            return node
    return None


def _append(parent: Any, child: Any) -> Any:
    """Append ``child`` (a Clark tag to create, or an element) as the last element of ``parent``,
    indented like its siblings; returns the appended element."""
    prev = _last_element(parent)
    indent = _indent_of(prev) if prev is not None else _indent_of(parent) + " "
    last = parent[-1] if len(parent) else None
    closing = last.tail if last is not None else parent.text
    if _is_blank(closing):  # the closing tag's indentation moves behind the new child
        text, tail = "\n" + indent, closing
    else:
        text, tail = (closing or "") + "\n" + indent, None
    if last is not None:
        last.tail = text
    else:
        parent.text = text
    if isinstance(child, str):
        child = etree.SubElement(parent, child)  # takes the prefix in scope for its namespace
    else:
        parent.append(child)
    child.tail = tail if tail is not None else "\n" + _indent_of(parent)
    return child


def _add_items(container: Any, values: list[str]) -> None:
    """Append an ``rdf:li`` for each of ``values``, indented as :func:`_append` would one by one."""
    if not values:
        return
    li = _append(container, _LI)
    li.text = values[0]
    if len(values) > 1:
        between, closing = _before(li), li.tail
        for value in values[1:]:
            li.tail = between
            li = etree.SubElement(container, _LI)
            li.text, li.tail = value, closing


def _remove(el: Any) -> None:
    """Remove ``el`` together with the whitespace that indented it (the text after it stays)."""
    before = _before(el)
    text = ("" if _is_blank(before) else before or "") + (el.tail or "")
    _set_before(el, text or None)
    el.tail = None
    el.getparent().remove(el)


def _in_scope(el: Any) -> dict[str, str]:
    """prefix -> namespace declared on ``el`` or its ancestors ("" is the default namespace)."""
    return {p or "": uri for p, uri in el.nsmap.items()}


def _own_declarations(el: Any) -> dict[str | None, str]:
    """The namespace declarations ``el`` itself makes (those that differ from its parent's scope)."""
    parent = el.getparent()
    outer = parent.nsmap if parent is not None else {}
    return {p: uri for p, uri in el.nsmap.items() if outer.get(p) != uri}


def _attr_prefix(el: Any, ns: str) -> str:
    """The prefix an attribute in namespace ``ns`` has at ``el``."""
    return next((p for p, uri in el.nsmap.items() if uri == ns and p), "")


class XmpPacket:
    """A parsed (or new) XMP packet; edits touch only ramtag's keyword items and record."""

    def __init__(self, tree: Any, xml_decl: bool, bom: bool, prefixes: set[str], defaults: bool) -> None:
        self.tree: Any = tree
        self.xml_decl = xml_decl
        self.bom = bom
        # every prefix declared anywhere (a superset, from the bytes): declarations lxml must keep when
        # a namespace is declared or ramtag's is taken out
        self._prefixes = prefixes
        self._defaults = defaults  # whether a default namespace (``xmlns="..."``) may be declared anywhere
        root = tree.getroot()
        if _is(root, NS_X, "xmpmeta"):
            rdfs = [e for e in _elements(root) if _is(e, NS_RDF, "RDF")]
            if rdfs:
                self.rdf = rdfs[0]
            else:
                self.rdf = _append(root, etree.Element(_clark(NS_RDF, "RDF"), nsmap={"rdf": NS_RDF}))
        elif _is(root, NS_RDF, "RDF"):
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
            if b"<!DOCTYPE" in body:
                _check(body)  # refused with expat's message, before lxml sees the bytes
            root = etree.fromstring(body, _parser())
        except (ExpatError, _Forbidden) as e:
            raise ValueError(str(e)) from None
        except etree.XMLSyntaxError as e:
            try:  # the reason as expat words it, as before lxml, where it finds one
                _check(body)
            except (ExpatError, _Forbidden) as expat_e:
                raise ValueError(str(expat_e)) from None
            raise ValueError(str(e)) from None
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:  # one the byte search missed (UTF-16)
            raise ValueError("DTD or entity declarations are not allowed in XMP")
        if _TOO_DEEP(root):
            raise ValueError(f"elements nested more than {MAX_DEPTH} levels deep")
        prefixes = {p.decode("utf-8", "replace") for p in _DECLARED.findall(body)}
        xml_decl = body.lstrip().startswith(b"<?xml")
        defaults = _DEFAULT_DECLARED.search(body) is not None
        return cls(root.getroottree(), xml_decl=xml_decl, bom=bom, prefixes=prefixes, defaults=defaults)

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
        root = self.tree.getroot()
        top = [*reversed(list(root.itersiblings(preceding=True))), root, *root.itersiblings()]
        out = [b'<?xml version="1.0" encoding="UTF-8"?>\n'] if self.xml_decl else []
        for node in top:  # the <?xpacket?> instructions and comments around the root, one a line
            out.append(etree.tostring(node, encoding="UTF-8", xml_declaration=False, with_tail=False))
            out.append(b"\n")
        data = b"".join(out)
        return b"\xef\xbb\xbf" + data if self.bom else data

    # -- navigation

    def descriptions(self) -> list[Any]:
        tag = _clark(NS_RDF, "Description")
        return [e for e in self.rdf if e.tag == tag]

    def _new_description(self) -> Any:
        self._prefix(self.rdf, NS_RDF, "rdf", declare_on=None)
        desc = _append(self.rdf, _clark(NS_RDF, "Description"))
        desc.set(_clark(NS_RDF, "about"), "")
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
        self._declare_on(declare_on, {prefix: ns})
        return prefix

    def _declare_on(self, el: Any, declarations: dict[str, str]) -> None:
        """Declare each prefix -> namespace on ``el``."""
        self._prefixes.update(declarations)
        self._cleanup(el, declarations, self._prefixes)

    def _cleanup(self, el: Any, declare: dict[str, str] | None, keep: set[str]) -> None:
        """Run lxml's cleanup_namespaces on ``el``'s subtree: the only way it offers to declare a namespace
        on an existing element (``declare``) or to take a declaration out. It removes every unused
        declaration whose prefix ``keep`` does not list, and unused default-namespace declarations
        whatever ``keep`` says: those are kept by an element in their namespace added for the while."""
        guards = []
        if self._defaults:
            for node in el.iter(etree.Element):
                default = _own_declarations(node).get(None)
                if default is not None:
                    guards.append(etree.SubElement(node, _clark(default, "ramtag-guard")))
        etree.cleanup_namespaces(el, top_nsmap=declare, keep_ns_prefixes=sorted(keep))
        for guard in guards:
            guard.getparent().remove(guard)

    def _find(self, ns: str, local: str) -> tuple[Any, Any] | None:
        """(description, property element) of the first ``ns:local`` property element, if any."""
        tag = _clark(ns, local)
        for desc in self.descriptions():
            for el in desc:
                if el.tag == tag:
                    return desc, el
        return None

    def _attribute_value(self, ns: str, local: str) -> str | None:
        key = _clark(ns, local)
        for desc in self.descriptions():
            value = desc.get(key)
            if value is not None:
                return str(value)
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
                raise ValueError(f"{_qualified(prop)} has a structure where a list was expected")
            return [text.strip()] if text.strip() else []
        return [t for t in (_text(li) for li in _items(container)) if t is not None]

    def set_values(self, field: XmpField, final: list[str], current: Any = ...) -> bool:
        """Make the property's item set equal ``final`` with minimal edits (kept items stay in place);
        ``current``: its :meth:`values` when the caller has them. Returns whether anything changed."""
        if current is ...:
            current = self.values(field.ns, field.local)
        if current is not None and set(current) == set(final):
            return False
        if current is None and not final:
            return False
        found = self._find(field.ns, field.local)
        if found is None:
            desc = self._home()
            key = _clark(field.ns, field.local)
            for d in self.descriptions():  # a (non-standard) attribute-style value becomes an array
                d.attrib.pop(key, None)
            self._prefix(desc, field.ns, field.prefix, declare_on=desc)
            prop = _append(desc, key)
        else:
            desc, prop = found
        container = _container(prop)
        if container is None:  # a simple value (or nothing) where a list belongs: make it a list
            old = (_text(prop) or "").strip()
            for c in list(prop):
                prop.remove(c)
            prop.text = None
            self._prefix(desc, NS_RDF, "rdf", declare_on=None)
            container = _append(prop, _clark(NS_RDF, field.container))
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
        new = [value for value in dict.fromkeys(final) if value not in seen]
        if new:
            self._prefix(container, NS_RDF, "rdf", declare_on=None)
            _add_items(container, new)
        if not _items(container):
            _remove(prop)
        return True

    def _add_item(self, container: Any, value: str) -> None:
        """Append an ``rdf:li`` holding ``value``."""
        _add_items(container, [value])

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
        self._prefix(desc, ns, prefix, declare_on=desc)
        _append(desc, _clark(ns, local)).text = value

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
            if li.get(_XML_LANG) == "x-default":
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
            self._prefix(desc, ns, prefix, declare_on=desc)
            prop = _append(desc, _clark(ns, local))
            self._prefix(desc, NS_RDF, "rdf", declare_on=None)
            _append(prop, _clark(NS_RDF, "Alt"))
        else:
            desc, prop = found
        container = _container(prop)
        for li in _items(container):
            if li.get(_XML_LANG) == "x-default":
                for c in list(li):
                    li.remove(c)
                li.text = value
                return
        self._prefix(container, NS_RDF, "rdf", declare_on=None)
        li = _append(container, _LI)
        li.set(_XML_LANG, "x-default")
        li.text = value

    def copy_properties(self, source: XmpPacket, wanted: dict[str, frozenset[str] | None]) -> None:
        """Copy ``source``'s properties whose namespace (and name) ``wanted`` lists, structures included,
        into this packet's home Description; properties this packet already has are left alone."""
        desc = self._home()

        def listed(ns: str | None, local: str) -> bool:
            names = wanted.get(ns or "", frozenset())
            return names is None or local in names

        for sdesc in source.descriptions():
            for key, value in sdesc.attrib.items():
                ns = key[1 : key.index("}")] if key[:1] == "{" else None
                local = _local(key)
                if ns in (None, NS_RDF, NS_XML) or not listed(ns, local) or self._has(ns, local):
                    continue
                if not self._declare(desc, [(_attr_prefix(sdesc, ns), ns)]):
                    continue
                desc.set(key, value)
            for el in _elements(sdesc):
                ns, local = _ns(el), _local(el.tag)
                if not listed(ns, local) or (ns is not None and self._has(ns, local)):
                    continue
                if not self._declare(desc, _prefixes_used(el)):
                    log.debug("not copying %s: its prefixes clash with the sidecar's", _qualified(el))
                    continue
                copy = deepcopy(el)
                copy.tail = None
                _append(desc, copy)

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
        missing = {prefix: ns for prefix, ns in needed if prefix not in scope}
        if missing:
            self._declare_on(desc, missing)
        return True

    def digest(self) -> str:
        """A digest of the packet's content apart from ramtag's record, namespace declarations,
        prefixes and whitespace (to tell whether anything changed since ramtag seeded a sidecar)."""

        def text(value: str | None) -> str | None:
            return (value or "").strip() or None

        def canon(el: Any) -> Any:
            ns = _ns(el)
            if ns == RAMTAG_NS:
                return None
            attrs = []
            for key, value in el.attrib.items():
                a_ns = key[1 : key.index("}")] if key[:1] == "{" else ""
                if a_ns != RAMTAG_NS:
                    attrs.append((a_ns, _local(key), value))
            kids = [text(el.text)]
            for child in el:
                kids.append(canon(child) if isinstance(child.tag, str) else None)
                kids.append(text(child.tail))
            return (ns, _local(el.tag), sorted(attrs), [k for k in kids if k is not None])

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
        prefix = "{" + RAMTAG_NS + "}"
        for desc in self.descriptions():
            for value in _RAMTAG_ATTRS(desc):
                props.setdefault(_local(value.attrname), str(value))
            for el in _elements(desc):
                if el.tag.startswith(prefix):
                    container = _container(el)
                    if container is not None:
                        props.setdefault(_local(el.tag), [_text(li) or "" for li in _items(container)])
                    else:
                        props.setdefault(_local(el.tag), (_text(el) or "").strip())
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

    def remove_record(self, rewriting: Any | None = None) -> None:
        """Remove every ramtag property and ramtag namespace declaration; ``rewriting``: the Description
        the record is written to next, whose declaration in scope stays where it is the only one."""
        prefix = "{" + RAMTAG_NS + "}"
        ours: set[str] = set()  # prefixes bound to ramtag's namespace
        elsewhere = False  # declared on a Description other than ``rewriting``
        for desc in self.descriptions():
            for el in _elements(desc):
                if el.tag.startswith(prefix):
                    _remove(el)
            for value in _RAMTAG_ATTRS(desc):
                del desc.attrib[value.attrname]
            ours.update(p for p, uri in desc.nsmap.items() if uri == RAMTAG_NS and p)
            elsewhere |= desc is not rewriting and RAMTAG_NS in _own_declarations(desc).values()
        if rewriting is not None and RAMTAG_NS in rewriting.nsmap.values() and not elsewhere:
            return
        if ours:  # the declarations go where nothing uses them any more
            self._cleanup(self.tree.getroot(), None, self._prefixes - ours)

    def write_record(self, record: RamtagRecord) -> None:
        desc = self._home()
        self.remove_record(rewriting=desc)
        self._prefix(desc, RAMTAG_NS, "ramtag", declare_on=desc)
        self._prefix(desc, NS_RDF, "rdf", declare_on=None)
        lists = (
            {"Tags": record.tags}
            | {f"Added{k}": v for k, v in record.added.items()}
            | {f"Filled{k}": v for k, v in record.filled.items()}
            | {"UserRoots": record.user_roots}
        )
        for name, values in lists.items():
            if not values:
                continue
            prop = _append(desc, _clark(RAMTAG_NS, name))
            bag = _append(prop, _BAG)
            _add_items(bag, list(values))
        created = (record.created_date or record.date or utc_now()) if record.created else ""
        simple = {"Model": record.model, "Date": record.date, "Created": created, "Seeded": record.seeded}
        for name, text in simple.items():
            if text:
                _append(desc, _clark(RAMTAG_NS, name)).text = text

    def is_empty(self) -> bool:
        """True when the packet holds no property at all (only rdf:about and declarations)."""
        root = self.tree.getroot()
        if root is not self.rdf and any(e is not self.rdf for e in _elements(root)):
            return False
        about = _clark(NS_RDF, "about")
        for el in _elements(self.rdf):
            if not _is(el, NS_RDF, "Description") or _elements(el):
                return False
            if any(key != about for key in el.attrib):
                return False
        return True

    def snapshot(self, fields: tuple[XmpField, ...]) -> tuple[Any, ...]:
        return tuple(tuple(sorted(self.values(f.ns, f.local) or ())) for f in fields)


_LI = _clark(NS_RDF, "li")
_BAG = _clark(NS_RDF, "Bag")
_CONTAINERS = frozenset(_clark(NS_RDF, name) for name in ("Bag", "Seq", "Alt"))
_XML_LANG = _clark(NS_XML, "lang")


def _qname(prefix: str, local: str) -> str:
    return f"{prefix}:{local}" if prefix else local


def _container(prop: Any) -> Any | None:
    for el in prop:
        if el.tag in _CONTAINERS:
            return el
    return None


def _items(container: Any) -> list[Any]:
    return [e for e in container if e.tag == _LI]


def _prefixes_used(el: Any) -> list[tuple[str, str]]:
    """(prefix, namespace) of every element and attribute in ``el``'s subtree that it does not declare."""
    out: dict[str, str] = {}
    declared: set[str] = set()
    for node in el.iter(etree.Element):
        declared.update(p or "" for p in _own_declarations(node))
        for key in node.attrib:
            if key[:1] == "{":
                ns = key[1 : key.index("}")]
                if ns != NS_XML:
                    out.setdefault(_attr_prefix(node, ns), ns)
        ns = _ns(node)
        if ns:
            out.setdefault(node.prefix or "", ns)
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
) -> bool:
    """Set every keyword property of ``packet`` as :func:`plan_fields` plans it; returns whether any
    item was added or removed."""
    current = {f.key: packet.values(f.ns, f.local) for f in SIDECAR_FIELDS}
    final = plan_fields(SIDECAR_FIELDS, current, old, record, names, hierarchy_root, fill=fill)
    changed = False
    for key, values in final.items():
        changed |= packet.set_values(FIELDS_BY_KEY[key], values, current[key])
    return changed


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
        changed = _apply_keywords(packet, old, record, names, hierarchy_root, fill=True)
        if not changed and record.same_content(old):
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


@dataclass
class _Listing:
    """What a folder held when it was listed: image stems and sidecar names."""

    stems: dict[str, list[str]]  # lower-case stem -> image file names with that stem
    sidecars: set[str] | None  # names of *.xmp files (any case); None: the folder could not be listed
    taken: float  # time.monotonic() of the listing

    @classmethod
    def of(cls, directory: Path) -> _Listing:
        stems: dict[str, list[str]] = {}
        sidecars: set[str] = set()
        taken = time.monotonic()
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    stem, suffix = os.path.splitext(entry.name)
                    suffix = suffix.lower()
                    if suffix in IMAGE_SUFFIXES:
                        stems.setdefault(stem.lower(), []).append(entry.name)
                    elif suffix == ".xmp":
                        sidecars.add(entry.name)
        except OSError:
            return cls(stems, None, taken)
        return cls(stems, sidecars, taken)

    def fresh(self) -> bool:
        return time.monotonic() - self.taken < SidecarLocator.LISTING_SECONDS


def read_sidecar(path: Path) -> bytes | None:
    """The bytes of an existing sidecar (None when there is none), at most ``MAX_SIDECAR_BYTES``: a larger
    file raises :class:`SidecarError` and is left alone (the read is bounded, whatever the file is)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENAMETOOLONG):  # (no file can have that name)
            return None
        raise
    not_regular = SidecarError(f"{printable(path)}: not a regular file; left alone - move it away")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the run, a device never end
        raise not_regular
    too_big = SidecarError(
        f"{printable(path)}: larger than {MAX_SIDECAR_BYTES // 2**20} MB, which no real sidecar reaches; "
        "left alone - check what it is, or move it away to let ramtag write a new one"
    )
    if st.st_size > MAX_SIDECAR_BYTES:
        raise too_big
    # O_NONBLOCK: should it have turned into a FIFO since the stat, the read returns instead of waiting
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        chunks, size = [], 0
        while size <= MAX_SIDECAR_BYTES:  # to the end, even if it grew since the stat; bounded
            chunk = os.read(fd, max(st.st_size - size, 0) + 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except BlockingIOError:
        raise not_regular from None
    finally:
        os.close(fd)
    if size > MAX_SIDECAR_BYTES:
        raise too_big
    return b"".join(chunks)


def _backup_path(path: Path) -> Path:
    candidate, n = path.with_name(path.name + ".bak"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{n}.bak"), n + 1
    return candidate


class SidecarLocator:
    """Finds the sidecar of an image: an existing one under either name, else the configured naming.

    ``photo.xmp`` (Adobe naming) is shared by every image with the stem ``photo``; it belongs to one
    of them (a RAW file first, then the alphabetically first extension) and the others use
    ``photo.<ext>.xmp``. Directory listings are cached (thread-safe, a few folders): they give the
    image stems, and they answer "is there no such sidecar?" for ``LISTING_SECONDS`` without asking
    the file system (a name that is not there is the slow lookup, and every image asks for three);
    a sidecar the listing shows is still checked on disk, and ones this locator's writer creates are
    added with :meth:`note_written`.
    """

    LISTING_SECONDS = 1.0  # how long a folder's listing is trusted for names that are not in it

    def __init__(self, naming: str = "ext", cache_dirs: int = 16) -> None:
        if naming not in ("ext", "replace"):
            raise ValueError(f"sidecar naming must be 'ext' or 'replace', not {naming!r}")
        self.naming = naming
        self._cache: OrderedDict[Path, _Listing] = OrderedDict()
        self._cache_dirs = cache_dirs
        self._lock = threading.Lock()

    def _listing(self, directory: Path, fresh: bool = False) -> _Listing:
        with self._lock:
            listing = self._cache.get(directory)
            if listing is not None and (not fresh or listing.fresh()):
                self._cache.move_to_end(directory)
                return listing
        listing = _Listing.of(directory)
        with self._lock:
            self._cache[directory] = listing
            self._cache.move_to_end(directory)
            while len(self._cache) > self._cache_dirs:
                self._cache.popitem(last=False)
        return listing

    def _stems(self, directory: Path) -> dict[str, list[str]]:
        return self._listing(directory).stems

    def _existing(self, path: Path) -> Path | None:
        """``path`` or its ``.XMP`` twin where one is a file; a name the fresh listing lacks is not asked
        about."""
        listing = self._listing(path.parent, fresh=True)
        for candidate in (path, path.with_name(path.stem + ".XMP")):
            if listing.sidecars is not None and candidate.name not in listing.sidecars:
                continue  # not there a moment ago: no need to ask
            if candidate.is_file():
                return candidate
        return None

    def note_written(self, sidecar: Path) -> None:
        """``sidecar`` exists now (or will once its batch is committed): the listing shows it."""
        with self._lock:
            listing = self._cache.get(sidecar.parent)
            if listing is not None and listing.sidecars is not None:
                listing.sidecars.add(sidecar.name)

    def owner_of_shared(self, image: Path) -> str:
        """File name of the image that owns ``<stem>.xmp`` among those sharing ``image``'s stem."""
        names = set(self._stems(image.parent).get(image.stem.lower(), [])) | {image.name}

        def rank(name: str) -> tuple[int, str]:
            suffix = os.path.splitext(name)[1].lower()
            return (0 if suffix in RAW_SUFFIXES else 1, suffix + name)

        return min(names, key=rank)

    def image_of(self, sidecar: Path) -> Path | None:
        """The photo whose sidecar ``sidecar`` is (``a.jpg`` for ``a.jpg.xmp``, the owner of a shared
        ``a.xmp``), None when that photo is not there."""
        base, suffix = os.path.splitext(sidecar.name)
        if suffix.lower() != ".xmp":
            return None
        if os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES and sidecar.with_name(base).is_file():
            return sidecar.with_name(base)
        names = self._stems(sidecar.parent).get(base.lower(), [])
        owner = self.owner_of_shared(sidecar.with_name(names[0])) if names else None
        return sidecar.with_name(owner) if owner is not None else None

    def locate(self, image: Path) -> tuple[Path, str]:
        """``(sidecar path, note)``; the note (else "") says why the other naming was used."""
        ext_path = image.with_name(image.name + ".xmp")
        shared = image.with_name(image.stem + ".xmp")
        found = self._existing(ext_path)
        if found is not None:
            return found, ""
        found_shared = self._existing(shared)
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
        found = self._existing(image.with_name(image.name + ".xmp"))
        if found is not None:
            out.append(found)
        shared = self._existing(image.with_name(image.stem + ".xmp"))
        if shared is not None and self.owner_of_shared(image) == image.name:
            out.append(shared)
        return out


# --------------------------------------------------------------------------------------------------
# The writer


class XmpSidecarWriter:
    """Writes each image's tags into its XMP sidecar (merging, atomically). Thread-safe.

    Image files are never opened for writing. ``repair_sidecars``: a sidecar that is not valid XML is
    copied to ``<sidecar>.bak`` and replaced by a fresh one instead of being reported.

    After :meth:`defer_durability` (what ``tag_library``'s writer thread does) a written sidecar is
    staged, its photo's lock held, until :meth:`sync` makes the whole batch durable at once
    (:class:`~ramtag.fsutil.AtomicBatch`); the caller records nothing before ``sync`` returns.
    """

    MAX_BATCH = 256  # sidecars staged at most (each holds two open files: its temporary and its lock)

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
        self._batch: AtomicBatch | None = None  # staged sidecars (after defer_durability)
        self._held: list[HeldLock] = []  # the photo locks the staged sidecars need until they are in place
        self._staged: dict[Path, Path] = {}  # staged sidecar -> its image
        self._inflight: list[_InFlight] = []  # batches started (sync_begin) and not yet waited for
        self._failed: list[tuple[str, str]] = []  # (image, one line) of staged sidecars that failed

    def defer_durability(self) -> None:
        """Stage sidecars from now on; :meth:`sync` makes them durable (where ``flock`` exists)."""
        if fcntl is not None and not self.dry_run:
            self._batch = AtomicBatch(background=True)

    def sync(self) -> list[tuple[str, str]]:
        """Make every staged sidecar durable in place and release its photo's lock; returns (image, one
        line) for each image whose sidecar could not be (it is left as it was: nothing is recorded)."""
        with self._lock:
            return self._finish_all()

    def _finish_all(self) -> list[tuple[str, str]]:
        """:meth:`_drain`, then every failure not yet handed out (earlier commits', started batches')."""
        self._drain()
        failed, self._failed = self._failed, []
        for batch in self._inflight:
            failed.extend(batch.finish())
        self._inflight = []
        return failed

    def sync_begin(self) -> Callable[[], list[tuple[str, str]]]:
        """:meth:`sync` in two steps: start making what is staged durable and return at once; the
        returned function waits for it and returns what :meth:`sync` would (call it before recording
        these images; meanwhile the next batch can be written)."""
        with self._lock:
            if self._batch is None:  # nothing staged (a dry run, or no flock): only earlier failures
                failed, self._failed = self._failed, []
                return lambda: failed
            batch = self._start()
            batch.failed_before, self._failed = self._failed, []
            self._inflight.append(batch)

        def wait() -> list[tuple[str, str]]:
            with self._lock:
                failed = batch.finish()
                if batch in self._inflight:
                    self._inflight.remove(batch)
                return failed

        return wait

    def _start(self) -> _InFlight:
        """Hand what is staged (and the photo locks it needs) to the disk."""
        assert self._batch is not None
        pending = self._batch.start_commit()
        batch = _InFlight(pending, self._held, self._staged)
        self._held, self._staged = [], {}
        return batch

    def _drain(self) -> None:
        """Every started batch and what is staged, durable (or failed) now; their locks released."""
        if self._batch is None:
            return
        for batch in self._inflight:
            batch.finish()
        if self._held or self._staged:
            batch = self._start()
            self._failed.extend(batch.finish())

    def _lock_photo(self, image: Path) -> Any:
        """The context that holds ``image``'s lock for one read-merge-write: a batch keeps it until it is
        committed, and never waits for another run while holding locks (it commits first)."""
        if self.dry_run:
            return contextlib.nullcontext()
        if self._batch is None:
            return file_lock(image)
        held = acquire_lock(image, wait=False)
        if held is None:  # another run writes this photo: finish our batches, then wait for it
            self._drain()
            held = acquire_lock(image)
            assert held is not None
        self._held.append(held)
        return contextlib.nullcontext()

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
            if self._batch is not None and (
                len(self._batch) >= self.MAX_BATCH or any(self._in_batch(s) for s in sidecars)
            ):
                self._drain()  # full, or a sidecar staged already: read it back as written
            # the lock orders concurrent ramtag runs writing the same photo (read-merge-write)
            with self._lock_photo(image):
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
                embedded=self._embedded(image, data) if names else None,  # (no tags: no new sidecar)
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
        within = self.roots or [image.parent]
        if self._batch is not None:
            self._staged[self._batch.add(sidecar, new, within=within)] = image
        else:
            atomic_write_bytes(sidecar, new, within=within)
        self.locator.note_written(sidecar)
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

    def _in_batch(self, sidecar: Path) -> bool:
        return sidecar in self._staged or any(sidecar in b.staged for b in self._inflight)

    def close(self) -> None:
        with self._lock:
            # what no sync() took (it is not recorded: the next run checks it again)
            for _, msg in self._finish_all():
                log.warning("%s", msg)
            if self._batch is not None:
                self._batch.close()
            if self._exiftool is not None:
                self._exiftool.close()
                self._exiftool = None


class _InFlight:
    """Staged sidecars on their way to the disk, with the photo locks they need until they are there."""

    def __init__(self, pending: PendingCommit, held: list[HeldLock], staged: dict[Path, Path]) -> None:
        self.pending, self.held, self.staged = pending, held, staged
        self.failed_before: list[tuple[str, str]] = []  # failures of earlier commits, reported with these
        self._failed: list[tuple[str, str]] | None = None

    def finish(self) -> list[tuple[str, str]]:
        """Wait until they are durable (once); (image, one line) for each that could not be."""
        if self._failed is None:
            try:
                results = self.pending.wait()
            finally:
                for held in self.held:
                    held.release()
                self.held = []
            failed = list(self.failed_before)
            for target, err in results:
                image = self.staged.get(target, target)
                if isinstance(err, OSError):
                    msg = str(OutputError.from_os(err, target))
                else:
                    msg = f"{printable(target)}: cannot write it ({printable(str(err))})"
                failed.append((str(image), msg))
            self._failed = failed
        return self._failed


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
    photo = image if image is not None and image.exists() else SidecarLocator().image_of(sidecar)
    # the lock tagging the photo takes; without the photo no run can be tagging it: the sidecar's own
    lock_on = photo if photo is not None else sidecar
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
