"""
CDM in XML (the NDM/XML CDM schema of CCSDS 505.0 / 508.0-B-1): C{<cdm
id="CCSDS_CDM_VERS" version="1.0">} with C{header} and C{body}; the body
holds C{relativeMetadataData} and two C{segment}s of C{metadata} and
C{data} (C{odParameters}, C{additionalParameters}, C{stateVector},
C{covarianceMatrix}).  Units travel in C{units} attributes.  Documents with
a DTD or entities are refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from suite.spacecomms.cdm import fields as F
from suite.spacecomms.cdm.model import CDM, CDMError, Segment, checkUnits, convert, formatValue

__all__ = ["parseXML", "writeXML", "MAX_XML_BYTES"]

MAX_XML_BYTES = 512 * 1024
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_SCHEMA = "https://sanaregistry.org/r/ndmxml_unqualified/ndmxml-2.0.0-master-2.0.xsd"


def _tag(el: ET.Element) -> str:
    t = el.tag if isinstance(el.tag, str) else ""
    return t.rsplit("}", 1)[-1]


def _text(el: ET.Element) -> str:
    if len(el):
        raise CDMError(_tag(el), "expected a simple value, found child elements")
    return el.text or ""


def _fill(
    el: ET.Element,
    table: dict[str, F.Field],
    values: dict[str, Any],
    comments: list[str],
    prefix: str,
    groups: tuple[str, ...] = (),
) -> None:
    for child in el:
        tag = _tag(child)
        if tag == "COMMENT":
            comments.append((child.text or "").strip())
            continue
        if tag in groups:
            _fill(child, table, values, comments, prefix)
            continue
        f = table.get(tag)
        where = prefix + tag if tag else prefix + _tag(el)
        if f is None:
            raise CDMError(where[:60] or _tag(el), f"unexpected element inside <{_tag(el)}>")
        if tag in values:
            raise CDMError(where, "duplicate element")
        units = child.get("units")
        checkUnits(f, units, where)
        values[tag] = convert(f, _text(child), where)


def _rejectDTD(text: str) -> None:
    upper = text[:4096].upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in text.upper():
        raise CDMError("cdm", "XML with a DTD or entities is not accepted")


def parseXML(text: str) -> CDM:
    """
    Parse an XML CDM into an L{CDM}; structure, types, enums and units are
    checked here, obligations by L{validate}.
    """
    if len(text) > MAX_XML_BYTES:
        raise CDMError("cdm", f"document larger than {MAX_XML_BYTES} bytes")
    _rejectDTD(text)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise CDMError("cdm", f"not well-formed XML ({e})")
    except ValueError as e:
        raise CDMError("cdm", f"not well-formed XML ({e})")
    if _tag(root) != "cdm":
        raise CDMError("cdm", f"root element must be <cdm>, got <{_tag(root)[:40]}>")
    if root.get("id", F.VERSION_KEY) != F.VERSION_KEY:
        raise CDMError(F.VERSION_KEY, "the cdm id attribute must be CCSDS_CDM_VERS")
    version = root.get("version")
    if version is None:
        raise CDMError(F.VERSION_KEY, "missing version attribute on <cdm>")
    cdm = CDM(version=version.strip())
    children = list(root)
    if [_tag(c) for c in children] != ["header", "body"]:
        raise CDMError("cdm", "<cdm> must hold exactly <header> then <body>")
    header, body = children
    _fill(header, F.HEADER_BY_NAME, cdm.header, cdm.headerComments, "")
    parts = list(body)
    if not parts or _tag(parts[0]) != "relativeMetadataData":
        raise CDMError("relativeMetadataData", "missing as the first element of <body>")
    _fill(parts[0], F.RELATIVE_BY_NAME, cdm.relative, cdm.relativeComments, "", ("relativeStateVector",))
    for i, segEl in enumerate(parts[1:], start=1):
        if _tag(segEl) != "segment":
            raise CDMError("segment", f"unexpected <{_tag(segEl)[:40]}> inside <body>")
        if i > 2:
            raise CDMError("OBJECT", "more than two segments")
        prefix = f"OBJECT{i}."
        seg = Segment()
        cdm.segments.append(seg)
        sub = list(segEl)
        if [_tag(c) for c in sub] != ["metadata", "data"]:
            raise CDMError(prefix + "segment", "a segment holds exactly <metadata> then <data>")
        _fill(sub[0], F.METADATA_BY_NAME, seg.metadata, seg.metadataComments, prefix)
        _fill(sub[1], F.DATA_BY_NAME, seg.data, seg.dataComments, prefix, F.DATA_GROUPS)
    return cdm


def _emit(parent: ET.Element, f: F.Field, value: Any) -> None:
    el = ET.SubElement(parent, f.name)
    el.text = formatValue(value)
    if f.units:
        el.set("units", f.units)


def _emitSection(
    parent: ET.Element, table: tuple[F.Field, ...], values: dict[str, Any], comments: list[str], grouped: bool
) -> None:
    for c in comments:
        ET.SubElement(parent, "COMMENT").text = c
    groups: dict[str, ET.Element] = {}
    for f in table:
        if f.name not in values:
            continue
        target = parent
        if grouped and f.group:
            if f.group not in groups:
                groups[f.group] = ET.SubElement(parent, f.group)
            target = groups[f.group]
        _emit(target, f, values[f.name])


def writeXML(cdm: CDM) -> str:
    """
    Render C{cdm} as an XML document.
    """
    root = ET.Element("cdm")
    root.set("xmlns:xsi", _XSI)
    root.set("xsi:noNamespaceSchemaLocation", _SCHEMA)
    root.set("id", F.VERSION_KEY)
    root.set("version", cdm.version)
    header = ET.SubElement(root, "header")
    _emitSection(header, F.HEADER, cdm.header, cdm.headerComments, False)
    body = ET.SubElement(root, "body")
    rel = ET.SubElement(body, "relativeMetadataData")
    _emitSection(rel, F.RELATIVE, cdm.relative, cdm.relativeComments, True)
    for seg in cdm.segments:
        segEl = ET.SubElement(body, "segment")
        _emitSection(ET.SubElement(segEl, "metadata"), F.METADATA, seg.metadata, seg.metadataComments, False)
        _emitSection(ET.SubElement(segEl, "data"), F.DATA, seg.data, seg.dataComments, True)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
