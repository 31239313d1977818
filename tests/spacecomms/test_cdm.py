"""
The CDM codec: KVN, XML and JSON round trips, validation naming the field,
and ccsds-ndm (test-only, GPL) as an independent oracle.
"""

from __future__ import annotations

import copy

from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.cdm import CDMError, decode, encode
from suite.spacecomms.cdm.jsonfmt import toDict
from suite.spacecomms.cdm.model import epochSeconds, sniff
from suite.spacecomms.cdm.sample import sampleCDM

FORMATS = ("kvn", "xml", "json")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


class RoundTripTests(SynchronousTestCase):
    """
    Every encoding carries the whole message.
    """

    def test_eachEncodingRoundTrips(self) -> None:
        """
        Encoding then decoding in each format gives back an equal CDM.
        """
        cdm = sampleCDM("RT-1")
        for fmt in FORMATS:
            self.assertEqual(decode(encode(cdm, fmt), fmt), cdm, fmt)

    def test_crossEncoding(self) -> None:
        """
        KVN -> XML -> JSON -> KVN keeps every value and comment.
        """
        cdm = sampleCDM("RT-2")
        xml = encode(decode(encode(cdm, "kvn")), "xml")
        js = encode(decode(xml), "json")
        kvn = encode(decode(js), "kvn")
        self.assertEqual(decode(kvn), cdm)

    def test_sniff(self) -> None:
        """
        The encoding is recognised from the first character.
        """
        cdm = sampleCDM()
        self.assertEqual([sniff(encode(cdm, f)) for f in FORMATS], list(FORMATS))

    def test_optionalCovarianceAndLowercaseEnums(self) -> None:
        """
        Optional covariance rows survive; enumerations are accepted in lower
        case (as the XML schema allows) and stored canonically.
        """
        cdm = sampleCDM()
        cdm.segments[0].data["CDRG_R"] = 1.5e-3
        cdm.segments[0].data["CTHR_THR"] = 2.0e-9
        text = encode(cdm, "kvn")
        self.assertIn("CDRG_R", text)
        self.assertIn("[m**3/kg]", text)
        back = decode(_replace(text, "REF_FRAME                    = EME2000", "REF_FRAME = eme2000"))
        self.assertEqual(back.segments[0].metadata["REF_FRAME"], "EME2000")
        self.assertEqual(back.segments[0].data["CTHR_THR"], 2.0e-9)

    def test_dayOfYearEpoch(self) -> None:
        """
        CCSDS day-of-year times are understood.
        """
        self.assertEqual(epochSeconds("2010-072T00:00:00Z"), epochSeconds("2010-03-13T00:00:00"))


class ValidationTests(SynchronousTestCase):
    """
    Invalid CDMs are rejected with the field named.
    """

    def _kvnError(self, old: str, new: str) -> CDMError:
        text = _replace(encode(sampleCDM(), "kvn"), old, new)
        return self.assertRaises(CDMError, decode, text)

    def test_missingMandatory(self) -> None:
        """
        A missing mandatory keyword is named (with its object).
        """
        e = self._kvnError("MESSAGE_ID                   = 201113719185\n", "")
        self.assertEqual(e.field, "MESSAGE_ID")
        text = encode(sampleCDM(), "kvn")
        second = text.index("OBJECT                       = OBJECT2")
        tail = text[second:].replace("COVARIANCE_METHOD            = CALCULATED\n", "", 1)
        e = self.assertRaises(CDMError, decode, text[:second] + tail)
        self.assertEqual(e.field, "OBJECT2.COVARIANCE_METHOD")

    def test_badEnums(self) -> None:
        """
        REF_FRAME, COVARIANCE_METHOD, MANEUVERABLE and OBJECT take only
        their enumerated values.
        """
        for old, new, field in (
            ("REF_FRAME                    = EME2000", "REF_FRAME = TEME", "OBJECT1.REF_FRAME"),
            (
                "COVARIANCE_METHOD            = CALCULATED",
                "COVARIANCE_METHOD = GUESSED",
                "OBJECT1.COVARIANCE_METHOD",
            ),
            ("MANEUVERABLE                 = YES", "MANEUVERABLE = MAYBE", "OBJECT1.MANEUVERABLE"),
            ("OBJECT                       = OBJECT1", "OBJECT = OBJECT3", "OBJECT1.OBJECT"),
        ):
            self.assertEqual(self._kvnError(old, new).field, field)

    def test_badUnitsAndNumbers(self) -> None:
        """
        Wrong units and non-numbers are refused, naming the keyword.
        """
        e = self._kvnError("MISS_DISTANCE                = 715.0 [m]", "MISS_DISTANCE = 715.0 [km]")
        self.assertEqual(e.field, "MISS_DISTANCE")
        self.assertIn("units", e.reason)
        e = self._kvnError("MISS_DISTANCE                = 715.0 [m]", "MISS_DISTANCE = far [m]")
        self.assertEqual(e.field, "MISS_DISTANCE")
        e = self._kvnError("CREATION_DATE", "CREATION_DATE = yesterday\nX_CREATION_DATE")
        self.assertEqual(e.field, "CREATION_DATE")

    def test_structure(self) -> None:
        """
        Unknown keywords, duplicates and a missing version are refused.
        """
        self.assertEqual(self._kvnError("ORIGINATOR ", "ORIGINATOR_X = 1\nORIGINATOR ").field, "ORIGINATOR_X")
        self.assertEqual(self._kvnError("ORIGINATOR ", "ORIGINATOR = X\nORIGINATOR ").field, "ORIGINATOR")
        self.assertEqual(self._kvnError("CCSDS_CDM_VERS               = 1.0\n", "").field, "CCSDS_CDM_VERS")
        self.assertEqual(
            self._kvnError("CCSDS_CDM_VERS               = 1.0", "CCSDS_CDM_VERS = 9.9").field,
            "CCSDS_CDM_VERS",
        )

    def test_xmlAndJSONErrorsNameFields(self) -> None:
        """
        XML and JSON problems name the element or member.
        """
        xml = _replace(
            encode(sampleCDM(), "xml"), "<REF_FRAME>EME2000</REF_FRAME>", "<REF_FRAME>MARS</REF_FRAME>"
        )
        self.assertEqual(self.assertRaises(CDMError, decode, xml).field, "OBJECT1.REF_FRAME")
        xml = _replace(encode(sampleCDM(), "xml"), '<X units="km">', '<X units="m">')
        self.assertEqual(self.assertRaises(CDMError, decode, xml).field, "OBJECT1.X")
        bomb = '<?xml version="1.0"?><!DOCTYPE cdm [<!ENTITY a "aaaa">]><cdm>&a;</cdm>'
        self.assertEqual(self.assertRaises(CDMError, decode, bomb).field, "cdm")
        doc = toDict(sampleCDM())
        broken = copy.deepcopy(doc)
        del broken["segments"][1]["data"]["Z_DOT"]
        import json

        self.assertEqual(self.assertRaises(CDMError, decode, json.dumps(broken)).field, "OBJECT2.Z_DOT")
        broken = copy.deepcopy(doc)
        broken["relative_metadata_data"]["COLLISION_PROBABILITY"] = 2.0
        self.assertEqual(
            self.assertRaises(CDMError, decode, json.dumps(broken)).field, "COLLISION_PROBABILITY"
        )
        self.assertEqual(self.assertRaises(CDMError, decode, "{not json").field, "cdm")

    def test_partialRelativeStateVector(self) -> None:
        """
        The relative state vector comes whole or not at all.
        """
        e = self._kvnError("RELATIVE_VELOCITY_N          = -1437.2 [m/s]\n", "")
        self.assertEqual(e.field, "RELATIVE_VELOCITY_N")


class OracleTests(SynchronousTestCase):
    """
    ccsds-ndm (GPL, used only here) parses what this codec writes, and this
    codec parses what ccsds-ndm writes.
    """

    def setUp(self) -> None:
        try:
            from ccsds_ndm.mapping import NDMFileFormats
            from ccsds_ndm.ndm_io import NdmIo
        except ImportError:
            self.skipTest("ccsds-ndm is not installed")
        self.io = NdmIo()
        self.formats = NDMFileFormats

    def test_oracleReadsOurs(self) -> None:
        """
        The oracle reads our KVN and XML with the same values.
        """
        cdm = sampleCDM("ORACLE-1")
        for fmt in ("kvn", "xml"):
            obj = self.io.from_string(encode(cdm, fmt))
            self.assertEqual(obj.header.message_id, "ORACLE-1")
            self.assertEqual(obj.body.relative_metadata_data.tca, cdm.tca)
            seg = obj.body.segment[1]
            self.assertEqual(seg.metadata.object_designator, "30337")
            self.assertEqual(float(seg.data.covariance_matrix.cr_r.value), 41.42)

    def test_weReadTheOracles(self) -> None:
        """
        What the oracle writes (KVN and XML) decodes to the original CDM.
        """
        cdm = sampleCDM("ORACLE-2")
        for source in ("kvn", "xml"):
            obj = self.io.from_string(encode(cdm, source))
            for target in (self.formats.KVN, self.formats.XML):
                self.assertEqual(decode(self.io.to_string(obj, target)), cdm, (source, target))
