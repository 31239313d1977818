"""
The CDM decoder's fast paths (the JSON section pass, the calendar-epoch check
and the mandatory-keyword set check) give exactly what the general,
keyword-by-keyword path gives: the same model, the same serialised output
and, for invalid input, the same error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.monkey import MonkeyPatcher
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.cdm import CDMError, decode, encode, jsonfmt, kvn, model
from suite.spacecomms.cdm import fields as F
from suite.spacecomms.cdm.jsonfmt import toDict
from suite.spacecomms.cdm.model import epochSeconds, epochValid
from suite.spacecomms.cdm.sample import sampleCDM

# Values put in place of each keyword's value in turn: every type JSON can
# give, text the general path strips, rejects or canonicalises, and epochs
# at the edges of the calendar.
_HOSTILE: tuple[Any, ...] = (
    1,
    0,
    -1,
    2**70,
    True,
    None,
    1.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "1.5",
    " 1.5 ",
    "",
    " ",
    "x",
    " padded ",
    "tab\t",
    "ctl\x01",
    "\u00a0nbsp",
    "y" * 1024,
    "z" * 1025,
    "payload",
    "PAYLOAD",
    "ROCKET BODY",
    "rocket body",
    "N/A",
    "n/a",
    "EME2000",
    "2010-03-12T02:14:12.746",
    "2010-03-12T02:14:12.746Z",
    "2010-03-12T02:14:12",
    "2010-03-12T02:14:12.1234567890123",
    "2010-072T00:00:00Z",
    "2010-366T00:00:00",
    "2012-366T00:00:00",
    "2012-02-29T00:00:00",
    "2010-02-29T00:00:00",
    "2000-02-29T00:00:00",
    "1900-02-29T00:00:00",
    "2010-04-31T00:00:00",
    "2010-00-10T00:00:00",
    "2010-13-10T00:00:00",
    "2010-01-00T00:00:00",
    "2010-12-31T23:59:60",
    "2010-12-31T24:00:00",
    "2010-12-31T23:60:00",
    "2010-12-31T23:59:61",
    "2010-1-31T23:59:59",
    "2010-01-31 23:59:59",
    "\u0662\u0660\u0661\u0660-01-31T23:59:59",
    [],
    ["a"],
    [1],
    {},
    {"a": 1},
)


def _fixtures() -> list[dict[str, Any]]:
    """
    JSON object models of the CDMs the rest of the CDM tests use.
    """
    plain = sampleCDM()
    withOptional = sampleCDM("FIXTURE-2", object2="99999", missDistance=0.0)
    withOptional.segments[0].data["CDRG_R"] = 1.5e-3
    withOptional.segments[0].data["CTHR_THR"] = 2.0e-9
    withOptional.segments[1].metadataComments.append("a metadata comment")
    withOptional.relativeComments.append("")
    sparse = sampleCDM("FIXTURE-3")
    for seg in sparse.segments:
        for key in ("OBJECT_TYPE", "OPERATOR_ORGANIZATION", "GRAVITY_MODEL", "TIME_LASTOB_START", "MASS"):
            seg.metadata.pop(key, None)
            seg.data.pop(key, None)
    sparse.relative.pop("COLLISION_PROBABILITY")
    return [json.loads(encode(c, "json")) for c in (plain, withOptional, sparse)]


def _mutations(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """
    C{doc} with one value replaced, one keyword removed or one added, for
    every keyword of every section.
    """
    sections = ["header", "relative_metadata_data"]
    sections += [f"segments.{i}.{part}" for i in range(2) for part in ("metadata", "data")]
    for path in sections:
        for key in list(_at(doc, path)):
            for value in _HOSTILE:
                changed = copy.deepcopy(doc)
                _at(changed, path)[key] = value
                yield changed
            removed = copy.deepcopy(doc)
            del _at(removed, path)[key]
            yield removed
        for key, value in (("COMMENT", ["c"]), ("COMMENT", "c"), ("COMMENT", [1]), ("NOT_A_KEYWORD", 1.0)):
            added = copy.deepcopy(doc)
            _at(added, path)[key] = value
            yield added
        for value in ([], None, "x"):
            replaced = copy.deepcopy(doc)
            parent, last = path.rsplit(".", 1) if "." in path else ("", path)
            (_at(replaced, parent) if parent else replaced)[last] = value
            yield replaced


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc[int(part)] if part.isdigit() else doc[part]
    return doc


def _outcome(doc: Any) -> tuple[str, Any]:
    """
    What decoding C{doc} gives: the model with its serialised forms and
    member order, or the error (text and field).
    """
    text = json.dumps(doc)
    try:
        cdm = decode(text.encode("utf-8"), "json")
    except CDMError as e:
        return ("error", (str(e), e.field, e.reason))
    orders = [list(cdm.header.items()), list(cdm.relative.items())]
    orders += [list(part.items()) for s in cdm.segments for part in (s.metadata, s.data)]
    return ("cdm", (cdm, orders, encode(cdm, "json"), encode(cdm, "kvn"), encode(cdm, "xml")))


class FastPathTests(SynchronousTestCase):
    """
    The fast paths against the general path, forced by patching them off.
    """

    def _generalOutcome(self, doc: Any) -> tuple[str, Any]:
        patcher = MonkeyPatcher(
            (jsonfmt, "_fastSection", lambda obj, accepts: False),
            (model, "epochValid", lambda text: False),
            (model, "_MANDATORY", {}),
        )
        return patcher.runWithPatches(_outcome, doc)

    def test_fixturesDecodeTheSame(self) -> None:
        """
        The fixtures decode to equal models, member order and encodings, and
        the fast section pass accepts every one of their sections.
        """
        calls: list[bool] = []
        real = jsonfmt._fastSection

        def spy(obj: dict[str, Any], accepts: Any) -> bool:
            calls.append(real(obj, accepts))
            return calls[-1]

        for doc in _fixtures():
            del calls[:]
            fast = MonkeyPatcher((jsonfmt, "_fastSection", spy)).runWithPatches(_outcome, doc)
            self.assertEqual(calls, [True] * 6)
            self.assertEqual(fast[0], "cdm")
            self.assertEqual(fast, self._generalOutcome(doc))
            self.assertEqual(toDict(fast[1][0]), doc)

    def test_mutationsDecodeTheSame(self) -> None:
        """
        Every one-keyword change of every fixture gives the same model or the
        same error on both paths.
        """
        seen = {"cdm": 0, "error": 0}
        for doc in _fixtures()[:1]:
            for changed in _mutations(doc):
                fast = _outcome(changed)
                self.assertEqual(fast, self._generalOutcome(changed), json.dumps(changed)[:200])
                seen[fast[0]] += 1
        self.assertGreater(seen["cdm"], 100)
        self.assertGreater(seen["error"], 100)

    def test_epochValidAgreesOnTheCalendar(self) -> None:
        """
        L{epochValid} accepts a calendar time exactly when L{epochSeconds}
        does, for every month and day of leap and common years and the edges
        of the time of day.
        """
        for year in ("1900", "2000", "2010", "2012"):
            for month in range(0, 14):
                for day in range(0, 33):
                    for clock in ("00:00:00", "23:59:60", "24:00:00", "23:60:00", "00:00:61", "12:00:00.5Z"):
                        text = f"{year}-{month:02d}-{day:02d}T{clock}"
                        self.assertEqual(epochValid(text), _accepted(text), text)
                        if _accepted(text):
                            self.assertEqual(epochSeconds(text), model._epochSecondsGeneral(text, "t"), text)

    @settings(max_examples=400, deadline=None)
    @given(
        st.text(alphabet="0123456789-T:.Z \u0663", min_size=0, max_size=34)
        | st.from_regex(r"\A\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-6]\d:[0-6]\d(\.\d{1,14})?Z?\Z")
    )
    def test_epochValidIsSound(self, text: str) -> None:
        """
        Whatever L{epochValid} accepts, L{epochSeconds} accepts too, and
        L{epochSeconds} gives what its general path gives.
        """
        if epochValid(text):
            self.assertTrue(_accepted(text), text)
        try:
            general: float | str = model._epochSecondsGeneral(text, "t")
        except CDMError as e:
            general = str(e)
        try:
            fast: float | str = epochSeconds(text, "t")
        except CDMError as e:
            fast = str(e)
        self.assertEqual(fast, general, text)

    def test_missingMandatoryStillNamed(self) -> None:
        """
        With the set check in front, a missing mandatory keyword is still
        reported by name, the first in table order.
        """
        doc = _fixtures()[0]
        del doc["segments"][1]["data"]["CN_N"]
        del doc["segments"][1]["data"]["X"]
        with self.assertRaises(CDMError) as caught:
            decode(json.dumps(doc), "json")
        self.assertEqual(str(caught.exception), "OBJECT2.X: missing mandatory field")


def _accepted(text: str) -> bool:
    try:
        epochSeconds(text)
    except CDMError:
        return False
    return True


# KVN lines put in place of, or after, a line of the sample document.
_KVN_LINES = (
    "COMMENT",
    "COMMENTS x",
    "COMMENT\tx",
    "COMMENTx = 1",
    "C",
    "CO",
    "CR_R",
    "CR_R = ",
    "cr_r = 1.0",
    "CR_R = 1.0 [M**2]",
    "CR_R = 1.0 [m**2 ]",
    "CR_R = 1.0 []",
    "CR_R = 1.0 [km]",
    "CR_R = 1.0 [m**2",
    "CR_R = 1.0 [ m**2]",
    "OBJECT_NAME = X [m]",
    "OBJECT_NAME = X []",
    "X1 = 1",
    "1X = 1",
    "_X = 1",
    "X-Y = 1",
    "= 1",
    "X = 1.0 [km] extra",
    "X = 1.0[km]",
    "X = 1.0 [KM]",
    "CCSDS_CDM_VERS = 1.0",
    "CCSDS_CDM_VERS = 1.0 [m]",
    "MISS_DISTANCE = 5 [m]",
    "MISS_DISTANCE = 5 [s]",
    "MISS_DISTANCE = nan [m]",
    "TCA = 2010-02-29T00:00:00",
    "TCA = 2012-02-29T00:00:00 [s]",
    "TCA = 2012-02-29T00:00:00",
    "RELATIVE_SPEED = 1 [m/s]",
    "RELATIVE_SPEED = 1 [M/S]",
    "OBJECT = OBJECT1",
)
_KVN_TARGETS = ("CCSDS_CDM_VERS", "MISS_DISTANCE", "CR_R", "OBJECT_NAME", "COMMENT", "TCA")


class KVNOutcomeTests(SynchronousTestCase):
    """
    The KVN parser's shortcuts (comment detection, keyword check, units
    check) leave every outcome as the line-by-line parser before them gave:
    cdm_kvn_outcomes.json holds what that parser (revision dd264fc) gave for
    each changed document, the error text or a digest of the JSON encoding.
    """

    def test_outcomesAsRecorded(self) -> None:
        with open(os.path.join(os.path.dirname(__file__), "cdm_kvn_outcomes.json")) as f:
            recorded = json.load(f)
        cdm = sampleCDM("KVN-1", created=1.7e9, tca=1.7e9 + 3 * 86400)
        cdm.segments[0].metadataComments.append("x")
        lines = encode(cdm, "kvn").splitlines()
        got = {}
        for target in _KVN_TARGETS:
            at = next(i for i, line in enumerate(lines) if line.startswith(target))
            for replacement in _KVN_LINES:
                for mode in ("replace", "insert"):
                    changed = list(lines)
                    if mode == "replace":
                        changed[at] = replacement
                    else:
                        changed.insert(at + 1, replacement)
                    try:
                        back = decode("\n".join(changed) + "\n", "kvn")
                    except CDMError as e:
                        outcome = str(e)
                    else:
                        digest = hashlib.sha256(encode(back, "json").encode()).hexdigest()[:16]
                        outcome = "ok " + digest
                    got[f"{target}|{mode}|{replacement}"] = outcome
        self.assertEqual(len(recorded), 432)
        for key, outcome in recorded.items():
            self.assertEqual(got[key], outcome, key)
        self.assertEqual(got.keys(), recorded.keys())

    def test_tableKeywordsAreKeywords(self) -> None:
        """
        Every keyword in the tables has the KVN keyword form, so the parser
        may skip the pattern for a keyword it finds in them.
        """
        for name in [*kvn._TABLE, F.VERSION_KEY]:
            self.assertIsNotNone(kvn._KEY.match(name), name)
        self.assertNotIn("COMMENT", kvn._TABLE)
