"""
The guide's client example sets both C{site} and C{peerName}: the site's
display name (C{profile.label}) and the peer's own short name
(C{profile.name}).  Both are kept; an explicit C{profile.*} key wins over its
legacy key and a different legacy value is named in a warning; a bad peer
name is refused naming the key.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.goop.config import defaultDocument, loadConfig, validateDocument


class LegacyKeysTests(SynchronousTestCase):
    def test_guideExampleKeepsBoth(self) -> None:
        """
        The guide's example, in either key order, gives label "My Site" and
        peer name "my-peer", with one "legacy key" line per key and nothing
        ignored.
        """
        guide = {"site": "My Site", "peerName": "my-peer", "rendezvous": "https://rendezvous.example.com"}
        for doc in (guide, dict(reversed(list(guide.items())))):
            cfg = validateDocument(self.mktemp(), doc)
            self.assertEqual(
                (cfg.label, cfg.peerName, cfg.rendezvousWan),
                ("My Site", "my-peer", "https://rendezvous.example.com"),
            )
            self.assertEqual(
                sorted(cfg.warnings),
                [
                    "goop.json: peerName: legacy key, read as profile.name",
                    "goop.json: rendezvous: legacy key, read as presence.rendezvous_wan",
                    "goop.json: site: legacy key, read as profile.label",
                ],
            )
        cfg = validateDocument(self.mktemp(), {"site": "same", "peerName": "same"})
        self.assertEqual((cfg.label, cfg.peerName), ("same", "same"))
        cfg = validateDocument(self.mktemp(), {"site": "only"})
        self.assertEqual(
            (cfg.label, cfg.peerName, cfg.warnings),
            ("only", "", ("goop.json: site: legacy key, read as profile.label",)),
        )

    def test_explicitProfileKeysWin(self) -> None:
        """
        profile.label beats site and profile.name beats peerName, whichever
        comes first in the file; a different ignored value is named in a
        warning, an equal one is quiet.
        """
        legacy = {"site": "S", "peerName": "P"}
        profile = {"profile": {"label": "L", "name": "N"}}
        for doc in ({**legacy, **profile}, {**profile, **legacy}):
            cfg = validateDocument(self.mktemp(), doc)
            self.assertEqual((cfg.label, cfg.peerName), ("L", "N"))
            self.assertIn("goop.json: site ('S') ignored: profile.label ('L') is set", cfg.warnings)
            self.assertIn("goop.json: peerName ('P') ignored: profile.name ('N') is set", cfg.warnings)
        cfg = validateDocument(self.mktemp(), {"site": "S", "peerName": "P", "profile": {"label": "S"}})
        self.assertEqual((cfg.label, cfg.peerName), ("S", "P"))
        self.assertEqual([w for w in cfg.warnings if "ignored" in w], [])
        cfg = validateDocument(self.mktemp(), {"peerName": "P", "profile": {"name": "N"}})
        self.assertEqual((cfg.label, cfg.peerName), ("", "N"))
        self.assertIn("goop.json: peerName ('P') ignored: profile.name ('N') is set", cfg.warnings)

    def test_badPeerNameRefused(self) -> None:
        """
        A peer name that is not a string, longer than 64 characters, holds
        control characters or surrounding spaces is refused with one line
        naming the key it came from.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            ({"peerName": 7}, "goop.json: peerName: must be a string"),
            ({"profile": {"name": ["x"]}}, "goop.json: profile.name: must be a string"),
            ({"peerName": "x" * 65}, "goop.json: peerName: 'xxxx"),
            ({"profile": {"name": "a\nb"}}, "goop.json: profile.name: 'a\\nb' is not a peer name"),
            ({"profile": {"name": " padded"}}, "goop.json: profile.name: ' padded' is not a peer name"),
            ({"peerName": "bell\x07"}, "goop.json: peerName: 'bell\\x07' is not a peer name"),
        ]
        for doc, start in cases:
            with self.assertRaises(ConfigError, msg=repr(doc)) as cm:
                validateDocument(self.mktemp(), doc)
            self.assertTrue(str(cm.exception).startswith(start), str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))
        with self.assertRaises(ConfigError) as cm:
            validateDocument(self.mktemp(), {"peerName": "x" * 65})
        self.assertIn("longer than 64 characters", str(cm.exception))
        for good in ("x" * 64, "my-peer", "Peer 7 ✓", ""):
            self.assertEqual(validateDocument(self.mktemp(), {"profile": {"name": good}}).peerName, good)

    def test_nameNotWrittenIntoNewFile(self) -> None:
        """profile.name is an extension: a new goop.json holds only the guide's profile keys."""
        self.assertEqual(sorted(defaultDocument()["profile"]), ["email", "label"])
        cfg = loadConfig(self.mktemp())
        self.assertEqual((cfg.peerName, cfg.warnings), ("", ()))
