"""
The spec guard: the manifest holds the hash of docs/clustor-spec.md.
"""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra import spec


class SpecGuardTests(SynchronousTestCase):
    def test_inSync(self) -> None:
        """
        The committed manifest matches the committed spec (run `make
        spec-sync-write` after reviewing a spec change).
        """
        self.assertIsNone(spec.checkManifest())

    def test_driftDetected(self) -> None:
        """
        Any change to the spec is reported until the manifest is rewritten.
        """
        base = self.mktemp()
        os.makedirs(os.path.join(base, "docs"))
        os.makedirs(os.path.join(base, "manifests"))
        doc = os.path.join(base, "docs", "clustor-spec.md")
        manifest = os.path.join(base, "manifests", "ceptra_manifest.json")
        shutil.copy(spec.SPEC_PATH, doc)
        shutil.copy(spec.MANIFEST_PATH, manifest)
        self.assertIsNone(spec.checkManifest(doc, manifest))
        with open(doc, "a") as f:
            f.write("\nA new rule.\n")
        problem = spec.checkManifest(doc, manifest)
        assert problem is not None
        self.assertIn("drifted", problem)
        self.assertIn("make spec-sync-write", problem)
        spec.writeManifest(doc, manifest)
        self.assertIsNone(spec.checkManifest(doc, manifest))
        self.assertEqual(spec.readManifest(manifest)["spec"], "docs/clustor-spec.md")

    def test_missingManifest(self) -> None:
        problem = spec.checkManifest(spec.SPEC_PATH, os.path.join(self.mktemp(), "none.json"))
        assert problem is not None
        self.assertIn("cannot read", problem)
