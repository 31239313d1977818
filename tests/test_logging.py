"""
Tests for L{suite.logging}: JSON lines, redaction, text mode, levels.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from suite import logging as suitelogging
from suite.logging import (
    Secret,
    jsonObserver,
    observer,
    parseLevel,
    redactEvent,
    setLevel,
    setVerbose,
    textObserver,
)


class _SettingsMixin:
    def restoreSettings(self: Any) -> None:
        saved = dict(suitelogging._settings)
        self.addCleanup(suitelogging._settings.update, saved)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


class JSONTests(SynchronousTestCase):
    """
    The default output: one JSON object per line.
    """

    def setUp(self) -> None:
        self.stream = io.StringIO()
        self.log = Logger(observer=jsonObserver(self.stream), namespace="suite.test")

    def test_linesParse(self) -> None:
        """
        Every event is one line that parses as a JSON object.
        """
        self.log.info("first {n}", n=1)
        self.log.warn("second")
        self.log.error("third\nwith a newline")
        text = self.stream.getvalue()
        self.assertEqual(len(text.splitlines()), 3)
        for record in _lines(self.stream):
            self.assertIsInstance(record, dict)

    def test_fields(self) -> None:
        """
        A record holds time, level, logger, the formatted message and the
        event's own named fields.
        """
        self.log.info("peer {peer} joined term {term}", peer="n1", term=7)
        [record] = _lines(self.stream)
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["logger"], "suite.test")
        self.assertEqual(record["msg"], "peer n1 joined term 7")
        self.assertEqual(record["peer"], "n1")
        self.assertEqual(record["term"], 7)
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_reservedNamesKept(self) -> None:
        """
        A field named like a record key does not overwrite it.
        """
        self.log.info("hello", msg="field", logger="other")
        [record] = _lines(self.stream)
        self.assertEqual(record["msg"], "hello")
        self.assertEqual(record["msg_"], "field")
        self.assertEqual(record["logger"], "suite.test")
        self.assertEqual(record["logger_"], "other")

    def test_oddValues(self) -> None:
        """
        Bytes, NaN and arbitrary objects still give valid JSON.
        """
        self.log.info("odd", raw=b"\xffab", nan=float("nan"), obj=object(), items=(1, "a"))
        line = self.stream.getvalue().strip()
        record = json.loads(line, parse_constant=lambda c: self.fail(f"non-JSON constant {c}"))
        self.assertEqual(record["nan"], "nan")
        self.assertEqual(record["items"], [1, "a"])
        self.assertIn("ab", record["raw"])
        self.assertIn("object", record["obj"])

    def test_failure(self) -> None:
        """
        C{log.failure} records the error message and the traceback.
        """
        try:
            raise ValueError("broken thing")
        except ValueError:
            self.log.failure("step failed")
        [record] = _lines(self.stream)
        self.assertEqual(record["level"], "critical")
        self.assertEqual(record["error"], "broken thing")
        self.assertIn("ValueError", record["traceback"])


class RedactionTests(SynchronousTestCase):
    """
    Secrets never reach the output.
    """

    def setUp(self) -> None:
        self.stream = io.StringIO()
        self.log = Logger(observer=jsonObserver(self.stream), namespace="suite.test")

    def assertNotLeaked(self, *secrets: str) -> None:
        text = self.stream.getvalue()
        for secret in secrets:
            self.assertNotIn(secret, text)

    def test_secretValue(self) -> None:
        """
        A L{Secret} renders as C{***} in the message and in its field.
        """
        self.log.info("using {credential}", credential=Secret("hunter2"), other=Secret("s3cr3t"))
        [record] = _lines(self.stream)
        self.assertEqual(record["msg"], "using ***")
        self.assertEqual(record["other"], "***")
        self.assertNotLeaked("hunter2", "s3cr3t")

    def test_secretNamedFields(self) -> None:
        """
        Fields named like secrets (snake_case, camelCase, dashed) are
        redacted whatever their type, in the message too.
        """
        self.log.info(
            "auth {token} {authToken} {password}",
            token="tok-AAAA",
            authToken="tok-BBBB",
            password="pw-CCCC",
            api_key="key-DDDD",
            privateKey="key-EEEE",
            client_secret="sec-FFFF",
            user="alice",
        )
        [record] = _lines(self.stream)
        for name in ("token", "authToken", "password", "api_key", "privateKey", "client_secret"):
            self.assertEqual(record[name], "***", name)
        self.assertEqual(record["user"], "alice")
        self.assertEqual(record["msg"], "auth *** *** ***")
        self.assertNotLeaked("tok-AAAA", "tok-BBBB", "pw-CCCC", "key-DDDD", "key-EEEE", "sec-FFFF")

    def test_nested(self) -> None:
        """
        Secret-named keys inside nested dicts and lists are redacted, in
        the field and in the formatted message.
        """
        config = {"db": {"password": "pw-nested"}, "peers": [{"psk": "psk-nested", "name": "p1"}]}
        self.log.info("config {config}", config=config)
        [record] = _lines(self.stream)
        self.assertEqual(record["config"]["db"]["password"], "***")
        self.assertEqual(record["config"]["peers"][0]["psk"], "***")
        self.assertEqual(record["config"]["peers"][0]["name"], "p1")
        self.assertNotLeaked("pw-nested", "psk-nested")

    def test_urlPassword(self) -> None:
        """
        The password of a C{user:password@host} URL is hidden.
        """
        self.log.info("connecting to {url}", url="ldap://admin:pw-url@127.0.0.1:389/")
        [record] = _lines(self.stream)
        self.assertEqual(record["url"], "ldap://admin:***@127.0.0.1:389/")
        self.assertNotLeaked("pw-url")

    def test_redactEventKeepsOriginal(self) -> None:
        """
        L{redactEvent} returns a copy; the event itself is not changed and
        C{log_*} keys are kept.
        """
        event = {"password": "x", "log_format": "{password}", "n": 1}
        out = redactEvent(event)
        self.assertEqual(out, {"password": "***", "log_format": "{password}", "n": 1})
        self.assertEqual(event["password"], "x")

    def test_secretReveal(self) -> None:
        """
        L{Secret} hides itself in str/repr/format but C{reveal} gives the value.
        """
        s = Secret("value")
        percent = "%s" % (s,)  # noqa: UP031
        self.assertEqual((str(s), repr(s), f"{s}", percent), ("***", "Secret('***')", "***", "***"))
        self.assertEqual(s.reveal(), "value")
        self.assertEqual(s, "value")


class TextTests(SynchronousTestCase):
    """
    The C{--verbose} output: human-readable lines.
    """

    def test_textLine(self) -> None:
        """
        A text line has the level, the namespace and the message, no JSON,
        and no colour when the stream is not a terminal.
        """
        stream = io.StringIO()
        log = Logger(observer=textObserver(stream), namespace="suite.test")
        log.warn("disk {pct}% full", pct=91, token="tok-text")
        line = stream.getvalue()
        self.assertIn("WARN", line)
        self.assertIn("[suite.test]", line)
        self.assertIn("disk 91% full", line)
        self.assertNotIn("\x1b[", line)
        self.assertNotIn("{", line)

    def test_colourOnTerminal(self) -> None:
        """
        On a terminal the level is coloured.
        """

        class TTY(io.StringIO):
            def isatty(self) -> bool:
                return True

        stream = TTY()
        Logger(observer=textObserver(stream), namespace="t").error("bad")
        self.assertIn("\x1b[31m", stream.getvalue())

    def test_textRedacts(self) -> None:
        """
        Text mode redacts like JSON mode.
        """
        stream = io.StringIO()
        Logger(observer=textObserver(stream)).info("pw {password}", password="pw-text")
        self.assertNotIn("pw-text", stream.getvalue())
        self.assertIn("pw ***", stream.getvalue())

    def test_textFailure(self) -> None:
        """
        A failure's traceback follows the line.
        """
        stream = io.StringIO()
        log = Logger(observer=textObserver(stream))
        try:
            raise KeyError("missing")
        except KeyError:
            log.failure("lookup failed")
        self.assertIn("lookup failed", stream.getvalue())
        self.assertIn("KeyError", stream.getvalue())


class ObserverTests(SynchronousTestCase, _SettingsMixin):
    """
    The twistd C{--logger} factory honours verbosity and level.
    """

    def setUp(self) -> None:
        self.restoreSettings()
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_defaultJSON(self) -> None:
        """
        By default the observer writes JSON lines on stderr at info level;
        debug is dropped.
        """
        setVerbose(False)
        setLevel("info")
        log = Logger(observer=observer(), namespace="n")
        log.debug("hidden")
        log.info("shown")
        records = _lines(self.stderr)
        self.assertEqual([r["msg"] for r in records], ["shown"])

    def test_verboseText(self) -> None:
        """
        After C{setVerbose(True)} the observer writes text lines.
        """
        setVerbose(True)
        Logger(observer=observer(), namespace="n").info("plain words")
        text = self.stderr.getvalue()
        self.assertIn("plain words", text)
        self.assertRaises(json.JSONDecodeError, json.loads, text)

    def test_levelFiltering(self) -> None:
        """
        C{setLevel("warn")} drops info and keeps warn and error.
        """
        setVerbose(False)
        setLevel("warn")
        log = Logger(observer=observer(), namespace="n")
        log.info("dropped")
        log.warn("kept warn")
        log.error("kept error")
        self.assertEqual([r["msg"] for r in _lines(self.stderr)], ["kept warn", "kept error"])

    def test_factoryNoiseIsDebug(self) -> None:
        """
        Twisted's "Starting factory <...>" lines are dropped at info level
        and kept at debug.
        """
        from twisted.internet.protocol import Factory

        setVerbose(False)
        setLevel("info")
        factory = Factory()
        factory.noisy = True
        log = Logger(observer=observer(), namespace="twisted.internet.protocol.Factory")
        log.info("Starting factory {factory!r}", factory=factory)
        log.info("Stopping factory {factory!r}", factory=factory)
        log.info("kept")
        self.assertEqual([r["msg"] for r in _lines(self.stderr)], ["kept"])
        setLevel("debug")
        Logger(observer=observer(), namespace="n").info("Starting factory {factory!r}", factory=factory)
        self.assertIn("Starting factory", _lines(self.stderr)[-1]["msg"])

    def test_levelObject(self) -> None:
        """
        C{setLevel} also takes a L{LogLevel}.
        """
        setLevel(LogLevel.error)
        log = Logger(observer=observer(), namespace="n")
        log.warn("dropped")
        log.error("kept")
        self.assertEqual([r["msg"] for r in _lines(self.stderr)], ["kept"])

    def test_parseLevel(self) -> None:
        """
        Level names map to L{LogLevel}s, with aliases; unknown names raise
        a one-line error naming the value.
        """
        self.assertIs(parseLevel("DEBUG"), LogLevel.debug)
        self.assertIs(parseLevel("warning"), LogLevel.warn)
        self.assertIs(parseLevel(" trace "), LogLevel.debug)
        self.assertIs(parseLevel("critical"), LogLevel.critical)
        e = self.assertRaises(ValueError, parseLevel, "loud")
        self.assertIn("'loud'", str(e))


class _Point:
    x = 3

    def __repr__(self) -> str:
        return "<Point 3>"


class FastPathTests(SynchronousTestCase):
    """
    L{suite.logging.formatJSON} (parsed formats cached, one pass over the
    event) writes exactly what the general path L{_formatJSONGeneral}
    (Twisted's formatter on a redacted copy) writes.
    """

    def events(self) -> list[dict[str, Any]]:
        try:
            raise ValueError("broken ünïcode thing")
        except ValueError:
            from twisted.python.failure import Failure

            failure = Failure()
        base = {"log_level": LogLevel.info, "log_namespace": "suite.test", "log_time": 1765000000.25}
        cases: list[dict[str, Any]] = [
            {
                "log_format": "routing decision: accepted {message_type} {message_id} from {peer}; {forwarding}",
                "message_type": "cdm_announce",
                "message_id": "a3f1",
                "peer": "node-a",
                "forwarding": "forwarded to node-c",
                "node": "node-b",
            },
            {"log_format": "ünïcode {name} → {value}", "name": "Ŝatelito", "value": "日本", "n": 1.5},
            {"log_format": "spec {n:>6.2f} {n!r} {s!s} {s!a} {{braces}}", "n": 2.0, "s": "ä"},
            {
                "log_format": "nested {cfg} {items}",
                "cfg": {"token": "t0p", "deep": {"password": "p"}},
                "items": [1, ("a", b"\xff")],
            },
            {"log_format": "url {u}", "u": "https://user:pw@example.org/x", "plain": "https://user:pw@h/"},
            {
                "log_format": "secret {credential} {authToken}",
                "credential": Secret("hunter2"),
                "authToken": "abc",
            },
            {"log_format": "missing {nothere}", "x": 1},
            {
                "log_format": "attr {p.x} idx {l[0]} call {f()}",
                "p": _Point(),
                "l": [9],
                "f": lambda: "called",
            },
            {"log_format": "positional {} {0}", "a": 1},
            {"log_format": "bad {unclosed", "a": 1},
            {"log_format": "bad spec {n:zz}", "n": 1},
            {"log_format": "conv {n!x}", "n": 1},
            {"log_format": "ns {log_namespace} {system}", "system": "-", "isError": 0, "format": "legacy"},
            {"log_format": None, "message": ("legacy",)},
            {"log_format": b"bytes {n}", "n": 1},
            {
                "log_format": "odd {nan} {obj}",
                "nan": float("nan"),
                "obj": _Point(),
                "raw": b"\xffab",
                "t": True,
                "z": None,
            },
            {
                "log_format": "reserved",
                "msg": "m",
                "msg_": "m2",
                "logger": "l",
                "error": "e",
                "traceback": "tb",
                "time": 1,
            },
            {"log_format": "step failed {n}", "n": 1, "log_failure": failure, "log_level": LogLevel.critical},
            {"log_format": "negative time", "log_time": -1.5},
            {"log_format": "just before 1970", "log_time": -0.5},
            {"log_format": "just after 1970", "log_time": 0.25},
        ]
        return [{**base, **case} for case in cases]

    def test_sameAsGeneralPath(self) -> None:
        """
        Representative events (non-ASCII, format specs and conversions,
        nested and secret fields, unformattable formats, failures, reserved
        names) give byte-identical lines, twice (the second from the caches).
        """
        from suite.logging import _formatJSONGeneral, formatJSON

        for _ in range(2):
            for event in self.events():
                self.assertEqual(formatJSON(event), _formatJSONGeneral(event), event.get("log_format"))

    def test_simpleFormatsSkipTwistedFormatter(self) -> None:
        """
        Formats of plain named fields are rendered from the parsed cache,
        without Twisted's formatter; the others still use it.
        """
        calls: list[object] = []
        from twisted.logger import formatEvent as general

        def counting(event: Any) -> str:
            calls.append(event)
            return general(event)

        self.patch(suitelogging, "formatEvent", counting)
        line = suitelogging.formatJSON({"log_format": "a {x!r} {y:>3}", "x": "é", "y": 7, "log_time": 1.0})
        self.assertEqual(json.loads(line)["msg"], "a 'é'   7")
        self.assertEqual(calls, [])
        suitelogging.formatJSON({"log_format": "a {p.x}", "p": _Point(), "log_time": 1.0})
        self.assertEqual(len(calls), 1)

    def test_formatCacheBounded(self) -> None:
        """
        The cache of parsed formats stays bounded when formats are built
        from data.
        """
        for i in range(suitelogging._FORMATS_MAX + 10):
            suitelogging.formatJSON({"log_format": f"n{i} {{v}}", "v": i, "log_time": 1.0})
        self.assertLessEqual(len(suitelogging._FORMATS), suitelogging._FORMATS_MAX)

    def test_sameSecondStamp(self) -> None:
        """
        Time stamps in the same second share the cached seconds but keep
        their own milliseconds; a new second is formatted anew.
        """
        lines = [
            json.loads(suitelogging.formatJSON({"log_format": "t", "log_time": t}))
            for t in (10.25, 10.75, 11.5)
        ]
        self.assertEqual(
            [r["time"] for r in lines],
            ["1970-01-01T00:00:10.250Z", "1970-01-01T00:00:10.750Z", "1970-01-01T00:00:11.500Z"],
        )
