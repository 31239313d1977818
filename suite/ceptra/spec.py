"""
The spec guard: C{manifests/ceptra_manifest.json} records the SHA-256 of
the Clustor protocol specification this code implements
(C{docs/clustor-spec.md}).  A test fails when the document and the manifest
drift apart; after changing the spec (and the code), refresh the manifest:

    make spec-sync-write        # python -m suite.ceptra.spec --write
    python -m suite.ceptra.spec # check only; exit 1 on drift
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

__all__ = ["SPEC_PATH", "MANIFEST_PATH", "specDigest", "readManifest", "writeManifest", "checkManifest"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(ROOT, "docs", "clustor-spec.md")
MANIFEST_PATH = os.path.join(ROOT, "manifests", "ceptra_manifest.json")


def specDigest(path: str = SPEC_PATH) -> str:
    """
    SHA-256 (hex) of the spec document's bytes.
    """
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def readManifest(path: str = MANIFEST_PATH) -> dict[str, str]:
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("spec_sha256"), str):
        raise ValueError(f"{path}: no spec_sha256 string")
    return doc


def writeManifest(spec: str = SPEC_PATH, manifest: str = MANIFEST_PATH) -> str:
    """
    Record the spec's current digest in the manifest; return it.
    """
    digest = specDigest(spec)
    doc = {"spec": os.path.relpath(spec, os.path.dirname(os.path.dirname(manifest))), "spec_sha256": digest}
    tmp = manifest + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, manifest)
    return digest


def checkManifest(spec: str = SPEC_PATH, manifest: str = MANIFEST_PATH) -> str | None:
    """
    C{None} when the manifest matches the spec, else one line saying why.
    """
    try:
        recorded = readManifest(manifest)["spec_sha256"]
    except (OSError, ValueError) as e:
        return f"cannot read the spec manifest: {e}"
    actual = specDigest(spec)
    if recorded != actual:
        return (
            f"{os.path.basename(spec)} (sha256 {actual[:12]}…) drifted from {os.path.basename(manifest)} "
            f"(sha256 {recorded[:12]}…); review the change and run `make spec-sync-write`"
        )
    return None


def main(argv: list[str]) -> int:
    if "--write" in argv:
        sys.stdout.write(f"{MANIFEST_PATH}: spec_sha256 {writeManifest()}\n")
        return 0
    problem = checkManifest()
    if problem:
        sys.stderr.write(problem + "\n")
        return 1
    sys.stdout.write("spec manifest in sync\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
