"""
The guide's client example sets both C{site} and C{peerName}: one label
wins by a stated rule, and the other value is named in a warning.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.goop.config import validateDocument


class LegacyLabelTests(SynchronousTestCase):
    def test_precedence(self) -> None:
        """
        profile.label beats peerName beats site, in either order; a
        different losing value is named in a warning; equal values are
        quiet.
        """
        for doc in ({"site": "My Site", "peerName": "my-peer"}, {"peerName": "my-peer", "site": "My Site"}):
            cfg = validateDocument(self.mktemp(), doc)
            self.assertEqual(cfg.label, "my-peer")
            self.assertIn(
                "goop.json: site ('My Site') ignored: peerName ('my-peer') sets profile.label", cfg.warnings
            )
        cfg = validateDocument(self.mktemp(), {"site": "S", "peerName": "P", "profile": {"label": "L"}})
        self.assertEqual(cfg.label, "L")
        self.assertIn("goop.json: peerName ('P') ignored: profile.label ('L') is set", cfg.warnings)
        cfg = validateDocument(self.mktemp(), {"site": "same", "peerName": "same"})
        self.assertEqual(cfg.label, "same")
        self.assertFalse([w for w in cfg.warnings if "ignored" in w])
        cfg = validateDocument(self.mktemp(), {"site": "only"})
        self.assertEqual(
            (cfg.label, cfg.warnings), ("only", ("goop.json: site: legacy key, read as profile.label",))
        )
