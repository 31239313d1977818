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
