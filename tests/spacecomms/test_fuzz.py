"""
Property-based fuzzing of the three CDM parsers: they never crash, and
every rejection names a field.
"""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.cdm import CDMError, decode, encode
from suite.spacecomms.cdm.jsonfmt import toDict
from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import EnvelopeError, decodeEnvelope

SAMPLE = sampleCDM("FUZZ")
TEXTS = {fmt: encode(SAMPLE, fmt) for fmt in ("kvn", "xml", "json")}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(data: str | bytes, fmt: str | None) -> None:
    try:
        decode(data, fmt)
    except CDMError as e:
        assert e.field and isinstance(e.field, str), repr(e)
        assert e.reason


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> str:
    text = TEXTS[fmt]
    lines = text.splitlines()
    op = draw(st.sampled_from(["drop", "dup", "swap", "edit", "truncate", "insert"]))
    i = draw(st.integers(0, len(lines) - 1))
    if op == "drop":
        del lines[i]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "edit":
        pos = draw(st.integers(0, max(0, len(lines[i]) - 1)))
        lines[i] = lines[i][:pos] + draw(st.text(max_size=8)) + lines[i][pos + 1 :]
    elif op == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    else:
        lines.insert(i, draw(st.text(max_size=40)))
    return "\n".join(lines)


@st.composite
def jsonMutated(draw: st.DrawFn) -> str:
    doc = toDict(SAMPLE)
    section = draw(st.sampled_from(["header", "relative_metadata_data", "meta", "data"]))
    target = (
        doc[section]
        if section in doc
        else doc["segments"][draw(st.integers(0, 1))]["metadata" if section == "meta" else "data"]
    )
    key = draw(st.sampled_from(sorted(target)))
    value = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        )
    )
    if draw(st.booleans()):
        target[key] = value
    else:
        del target[key]
    return json.dumps(doc)


class EnvelopeFuzzTests(SynchronousTestCase):
    """
    The peer frame decoder never crashes either.
    """

    @SETTINGS
    @given(st.binary(max_size=300))
    def test_arbitraryFrames(self, data: bytes) -> None:
        """
        Arbitrary bytes decode or are rejected naming a field.
        """
        try:
            decodeEnvelope(data)
        except EnvelopeError as e:
            assert e.field

    @SETTINGS
    @given(
        st.dictionaries(
            st.sampled_from(
                [
                    "protocol_version",
                    "message_id",
                    "timestamp",
                    "source_node",
                    "message_type",
                    "hop_count",
                    "ttl",
                    "path",
                    "payload",
                ]
            ),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-(2**63), 2**63 - 1)
                | st.floats()
                | st.text(max_size=10)
                | st.binary(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
                ),
                max_leaves=10,
            ),
        )
    )
    def test_structuredFrames(self, doc: dict) -> None:
        """
        Maps with envelope-like members of any type decode or are rejected
        naming a field.
        """
        try:
            decodeEnvelope(msgpack.packb(doc, use_bin_type=True))
        except EnvelopeError as e:
            assert e.field


class NodeInputFuzzTests(SynchronousTestCase):
    """
    Well-formed envelopes with arbitrary payload contents never raise out
    of the node; bad ones are answered with an ERROR.
    """

    @SETTINGS
    @given(
        st.sampled_from(["CDM_ANNOUNCE", "CDM_WITHDRAW", "OBJECT_STATE_ANNOUNCE", "OBJECT_STATE_WITHDRAW"]),
        st.one_of(
            st.just(toDict(SAMPLE)),
            st.dictionaries(
                st.one_of(st.text(max_size=12), st.integers(0, 5)),
                st.one_of(st.text(max_size=8), st.floats(), st.integers(-5, 5), st.none()),
                max_size=5,
            ),
        ),
        st.sampled_from(["FALSE_POSITIVE", "DECAYED", "BOGUS"]),
    )
    def test_payloads(self, mtype: str, body: dict, reason: str) -> None:
        """
        Whatever the CDM or state body, the node stores it or answers ERROR.
        """
        from tests.spacecomms.sim import SimNet

        net = SimNet(0)
        try:
            net.addNode("B", {"A": Policies()})
            net.addNode("A", {"B": Policies()})
            net.connect("A", "B")
            key = "cdm_id" if mtype.startswith("CDM") else "object_id"
            payload = {key: "FUZZ", "sequence": 5, "cdm": body, "state": body, "reason": reason}
            frame = msgpack.packb(
                {
                    "protocol_version": "1.0",
                    "message_id": "fz1",
                    "timestamp": net.clock.seconds(),
                    "source_node": "A",
                    "message_type": mtype,
                    "hop_count": 0,
                    "ttl": 60,
                    "path": ["A"],
                    "payload": payload,
                },
                use_bin_type=True,
            )
            try:
                env = decodeEnvelope(frame)
            except EnvelopeError as e:
                assert e.field
                return
            if mtype == "OBJECT_STATE_ANNOUNCE":
                # A state that passes is one the REST API can serve as JSON.
                json.dumps(env.payload["state"], allow_nan=False)
            net.nodes["B"].envelopeReceived(net.links[("B", "A")], env)
        finally:
            net.stop()


class FuzzTests(SynchronousTestCase):
    """
    Random and mutated documents never crash a parser.
    """

    @SETTINGS
    @given(st.text(max_size=300), st.sampled_from(["kvn", "xml", "json", None]))
    def test_arbitraryText(self, text: str, fmt: str | None) -> None:
        """
        Arbitrary text is parsed or rejected naming a field.
        """
        _check(text, fmt)

    @SETTINGS
    @given(st.binary(max_size=200))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes (often not UTF-8) are rejected cleanly.
        """
        _check(data, None)

    @SETTINGS
    @given(mutated("kvn"))
    def test_mutatedKVN(self, text: str) -> None:
        """
        A valid KVN document with a line dropped, doubled, swapped, edited or
        cut is parsed or rejected naming a field.
        """
        _check(text, "kvn")

    @SETTINGS
    @given(mutated("xml"))
    def test_mutatedXML(self, text: str) -> None:
        """
        Mutated XML is parsed or rejected naming a field.
        """
        _check(text, "xml")

    @SETTINGS
    @given(jsonMutated())
    def test_mutatedJSON(self, text: str) -> None:
        """
        JSON with a member removed or replaced by any JSON value is parsed
        or rejected naming a field.
        """
        _check(text, "json")


class ObjectStateTests(SynchronousTestCase):
    """
    An object state from a peer must be plain JSON data: the REST API serves
    it as JSON, so NaN, Infinity, binary values, non-string keys and deep
    nesting are refused at the envelope, naming the field.
    """

    def _frame(self, state: object) -> bytes:
        return msgpack.packb(
            {
                "protocol_version": "1.0",
                "message_id": "st1",
                "timestamp": 1_700_000_000.0,
                "source_node": "A",
                "message_type": "OBJECT_STATE_ANNOUNCE",
                "hop_count": 0,
                "ttl": 60,
                "path": ["A"],
                "payload": {"object_id": "SAT-1", "sequence": 5, "state": state},
            },
            use_bin_type=True,
        )

    def test_refused(self) -> None:
        """
        Each kind of non-JSON value is an EnvelopeError naming where it is.
        """
        deep: object = 1
        for _ in range(40):
            deep = [deep]
        for state, field in [
            ({"x": float("nan")}, "payload.state.x"),
            ({"a": {"b": [1, float("inf")]}}, "payload.state.a.b[1]"),
            ({"x": b"raw"}, "payload.state.x"),
            ({"a": {1: "int key"}}, "payload.state.a"),
            ({"deep": deep}, "payload.state.deep"),
        ]:
            e = self.assertRaises(EnvelopeError, decodeEnvelope, self._frame(state))
            self.assertTrue(e.field.startswith(field), (state, e.field, e.reason))

    def test_accepted(self) -> None:
        """
        Ordinary JSON data (nested maps and lists, every scalar type) passes.
        """
        state = {"name": "one", "n": 3, "r": 1.5, "ok": True, "none": None, "v": [[1, 2], {"k": "v"}]}
        env = decodeEnvelope(self._frame(state))
        self.assertEqual(env.payload["state"], state)
