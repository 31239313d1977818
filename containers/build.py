"""
Build every daemon family's image offline (docs/containers.md):

    python3 containers/build.py [--python .venv/bin/python] [--base-only] [FAMILY ...]

1. the base: Debian's python3 from the host's apt sources, unpacked into a
   root filesystem and ``docker import``-ed as ``suite-base:local``
   (containers/mkbase.py; cached by content hash, imported once per engine);
2. a wheelhouse: the suite's wheel built from this checkout and a wheel of
   every dependency (and of pip), built on the host by ``--python``'s pip;
3. ``docker build --network none --target FAMILY`` of the Dockerfile with
   ``BASE=suite-base:local`` in a build context holding only the Dockerfile,
   the health probe and the wheelhouse: nothing is fetched during the build.

The engine is the one ``docker`` reaches (``DOCKER_HOST`` included).  The
build uses BuildKit (each stage built once, metadata steps free); a client
without it (Docker 23+ without the buildx plugin) is replaced by Debian's
docker.io client at /usr/bin/docker when that has it, else the classic
builder runs (slower, same images).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mkbase  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)

#: Dockerfile target -> image name (the guides' names).
IMAGES = {
    "spacecomms": "spacecomms:latest",
    "goop": "goop2:latest",
    "specter": "specter:latest",
    "constellation": "constellation-agent:latest",
    "ceptra": "ceptra:latest",
}
BASE_TAG = "suite-base:local"


def _log(message: str) -> None:
    sys.stderr.write(f"containers: {message}\n")
    sys.stderr.flush()


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    return done.stdout


def _ok(argv: list[str], env: dict[str, str] | None = None) -> bool:
    return subprocess.run(argv, capture_output=True, env=env).returncode == 0


def dockerClient() -> tuple[str, dict[str, str]]:
    """
    A C{docker} client and the environment with which it builds with
    BuildKit when one can; else the first client, with the classic builder.
    """
    candidates = []
    for c in (os.environ.get("DOCKER") or shutil.which("docker"), "/usr/bin/docker"):
        if c and os.path.exists(c) and c not in candidates:
            candidates.append(c)
    if not candidates:
        raise SystemExit("no docker client (Debian: apt-get install docker.io)")
    for client in candidates:
        if _ok([client, "buildx", "version"]):
            return client, dict(os.environ, DOCKER_BUILDKIT="1")
        version = subprocess.run(
            [client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        try:
            major = int(version.split(".")[0])
        except ValueError:
            continue
        if major < 23:  # BuildKit built into the client
            return client, dict(os.environ, DOCKER_BUILDKIT="1")
    _log("no BuildKit-capable docker client: using the classic builder")
    return candidates[0], dict(os.environ, DOCKER_BUILDKIT="0")


def importBase(client: str, cache: str) -> str:
    """
    Make the base tar (cached) and import it unless the engine has it;
    returns the tag naming this exact base.
    """
    tar, key = mkbase.baseTar(cache)
    exact = f"suite-base:{key}"
    if not _ok([client, "image", "inspect", exact]):
        _log(f"importing {os.path.basename(tar)}")
        _run([client, "import", *mkbase.IMPORT_CHANGES, tar, exact])
    _run([client, "tag", exact, BASE_TAG])
    return exact


def wheelhouse(python: str, out: str) -> None:
    """
    Wheels of the suite (from this checkout), its dependencies and pip.
    """
    _run([python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", out, SRC, "pip"], cwd=SRC)


def context(python: str, work: str) -> str:
    """
    A build context with only what the offline build reads.
    """
    ctx = os.path.join(work, "context")
    os.makedirs(os.path.join(ctx, "containers"))
    shutil.copy(os.path.join(SRC, "Dockerfile"), ctx)
    shutil.copy(os.path.join(HERE, "healthcheck.py"), os.path.join(ctx, "containers"))
    wheelhouse(python, os.path.join(ctx, "containers", "wheels"))
    return ctx


def build(families: list[str], python: str, cache: str) -> None:
    client, env = dockerClient()
    started = time.monotonic()
    importBase(client, cache)
    _log(f"base ready after {time.monotonic() - started:.1f} s")
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix="build.", dir=cache)
    try:
        ctx = context(python, work)
        _log(f"wheelhouse ready after {time.monotonic() - started:.1f} s")
        for family in families:
            _run(
                [
                    client, "build", "--quiet", "--network", "none", "--build-arg", f"BASE={BASE_TAG}",
                    "--target", family, "--tag", IMAGES[family], ctx,
                ],
                env=env,
            )  # fmt: skip
            _log(f"{IMAGES[family]} built after {time.monotonic() - started:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].strip())
    parser.add_argument("--python", default=sys.executable, help="interpreter whose pip builds the wheels")
    parser.add_argument("--cache", default=os.path.join(SRC, "var", "containers"))
    parser.add_argument("--base-only", action="store_true", help="only make and import the base")
    parser.add_argument("families", nargs="*", metavar="FAMILY", help=f"any of {', '.join(IMAGES)} (all)")
    args = parser.parse_args()
    unknown = sorted(set(args.families) - set(IMAGES))
    if unknown:
        parser.error(f"unknown family {', '.join(unknown)}: choose from {', '.join(IMAGES)}")
    if args.base_only:
        client, _ = dockerClient()
        print(importBase(client, args.cache))
        return
    build(args.families or list(IMAGES), args.python, args.cache)


if __name__ == "__main__":
    main()
