"""
Build the containers' base image offline from Debian's own packages.

    python3 containers/mkbase.py [--cache DIR] [--list]

(``make base-image`` runs containers/build.py --base-only, which also
imports the result as ``suite-base:local``.)

The root filesystem holds Debian's python3 (the interpreter, its standard
library and the shared libraries they load), the CA certificates,
busybox-static for the few shell commands of the Dockerfile's build steps,
and an /etc/passwd with root, nobody and the suite's user (uid 10001).  The
packages are fetched with ``apt-get download`` from the host's apt sources
(the host's own Debian release) and unpacked with ``dpkg-deb -x``: no
maintainer script runs and no registry is contacted.  The result is a tar
file for ``docker import``, kept in the cache directory under a name made of
the hash of this script and of every package's name, version and
architecture, so a second run with the same packages only prints the path.

Prints the tar file's path; C{--list} prints the packages instead.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile

#: What the image is for: the interpreter with its standard library
#: (python3-minimal has the /usr/bin/python3 link), C++ runtime for wheels
#: that link it, CA certificates, a static shell.
ROOTS = (
    "python3-minimal",
    "libpython3-stdlib",
    "libstdc++6",
    "libgcc-s1",
    "ca-certificates",
    "busybox-static",
    "media-types",
)

#: Packages whose files the image does not need although a root above
#: depends on them (package management, maintainer-script helpers, perl,
#: the openssl command); their own dependencies are not followed either.
SKIP = frozenset(
    {
        "dpkg",
        "debconf",
        "cdebconf",
        "debconf-2.0",
        "perl-base",
        "perl",
        "perl-modules-5.36",
        "libperl5.36",
        "install-info",
        "tar",
        "openssl",
        "debianutils",
        "mailcap",
        "mime-support",
    }
)

#: Applets linked in /bin: what the Dockerfile's RUN steps use.
APPLETS = (
    "sh", "cat", "chmod", "chown", "cp", "echo", "env", "false", "find", "grep",
    "id", "ln", "ls", "mkdir", "mv", "rm", "sed", "sleep", "test", "true",
)  # fmt: skip

#: Documentation and data the image never reads.
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/lib/python3.*/lib2to3",
    "usr/lib/python3.*/pydoc_data",
    "usr/lib/python3.*/turtledemo",
)

#: C{docker import --change} lines of the base image.
IMPORT_CHANGES = ("--change", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin")

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "suite:x:10001:10001:suite:/nonexistent:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nsuite:x:10001:\nnogroup:x:65534:\n"


def _run(*argv: str, cwd: str | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _depends(names: list[str]) -> dict[str, list[str]]:
    """
    The hard dependencies (Depends, Pre-Depends) of C{names} and of every
    package they reach: of a set of alternatives the first real package,
    none when one of them is skipped.
    """
    out = _run(
        "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
        "--no-breaks", "--no-replaces", "--no-enhances", *names,
    )  # fmt: skip
    result: dict[str, list[str]] = {}
    current: list[str] = []
    group: list[str] = []
    for line in out.splitlines():
        if not line.startswith(" "):
            current = result.setdefault(line.strip(), [])
            continue
        kind, _, target = line.strip().partition(":")
        if kind.lstrip("|") not in ("Depends", "PreDepends"):
            continue  # a virtual package's providers, listed under it
        group.append(target.strip())
        if kind.startswith("|"):
            continue  # more alternatives follow
        alternatives, group = group, []
        if any(a.strip("<>") in SKIP for a in alternatives):
            continue
        real = [a for a in alternatives if not a.startswith("<")]
        if not real:
            raise SystemExit(f"only virtual packages satisfy {alternatives}: name one in ROOTS")
        current.append(real[0])
    return result


def closure() -> list[str]:
    """
    The packages of the image: L{ROOTS} and their dependencies, less L{SKIP}
    (whose own dependencies are not followed).
    """
    graph = _depends(list(ROOTS))
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop().split(":")[0]
        if name in seen or name in SKIP:
            continue
        seen.add(name)
        todo.extend(graph.get(name, []))
    return sorted(seen)


def versions(packages: list[str]) -> list[str]:
    """
    C{name=version} for each package, as C{apt-get download} will fetch it.
    """
    out = _run("apt-cache", "policy", *packages)
    result = []
    name = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.rstrip(":")
        elif line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version == "(none)":
                raise SystemExit(f"no installable version of {name}: run apt-get update")
            result.append(f"{name}={version}")
    return sorted(result)


def key(pinned: list[str]) -> str:
    digest = hashlib.sha256()
    with open(__file__, "rb") as f:
        digest.update(f.read())
    digest.update(_run("dpkg", "--print-architecture").encode())
    digest.update("\n".join(pinned).encode())
    return digest.hexdigest()[:16]


def build(pinned: list[str], debs: str, out: str) -> None:
    """
    Download the packages into C{debs}, unpack them into a fresh root
    filesystem, finish it, and write it as the tar file C{out}.
    """
    os.makedirs(debs, exist_ok=True)
    wanted = [p for p in pinned if not glob.glob(os.path.join(debs, _debGlob(p)))]
    if wanted:
        _run("apt-get", "download", "-q", *wanted, cwd=debs)
    work = tempfile.mkdtemp(prefix="suite-base.", dir=os.path.dirname(out))
    try:
        rootfs = os.path.join(work, "rootfs")
        os.makedirs(rootfs)
        for p in pinned:
            matches = glob.glob(os.path.join(debs, _debGlob(p)))
            if not matches:
                raise SystemExit(f"apt-get download gave no file for {p}")
            _run("dpkg-deb", "-x", matches[0], rootfs)
        finish(rootfs)
        _run("tar", "--numeric-owner", "-C", rootfs, "-cf", out + ".part", ".")
        os.replace(out + ".part", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _debGlob(pinned: str) -> str:
    name, version = pinned.split("=", 1)
    # apt-get download writes the epoch's colon as %3a
    return f"{name}_{version.replace(':', '%3a')}_*.deb"


def finish(rootfs: str) -> None:
    """
    What the skipped maintainer scripts would have done, and no more.
    """

    def path(*parts: str) -> str:
        return os.path.join(rootfs, *parts)

    for pattern in PRUNE:
        for d in glob.glob(path(pattern)):
            shutil.rmtree(d, ignore_errors=True)
    for d in ("tmp", "var/tmp", "run", "root", "etc/ssl/certs", "usr/lib/ssl", "usr/sbin", "home"):
        os.makedirs(path(d), exist_ok=True)
    os.chmod(path("tmp"), 0o1777)
    os.chmod(path("var/tmp"), 0o1777)
    os.chmod(path("root"), 0o700)
    with open(path("etc/passwd"), "w") as f:
        f.write(PASSWD)
    with open(path("etc/group"), "w") as f:
        f.write(GROUP)
    with open(path("etc/nsswitch.conf"), "w") as f:
        f.write("passwd: files\ngroup: files\nhosts: files dns\n")
    with open(path("etc/ld.so.conf"), "w") as f:
        f.write("include /etc/ld.so.conf.d/*.conf\n")
    for applet in APPLETS:
        link = path("bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    # update-ca-certificates: one bundle of every shipped certificate,
    # where OpenSSL (and so Python's ssl) looks by default.
    certs = sorted(glob.glob(path("usr/share/ca-certificates/*/*.crt")))
    with open(path("etc/ssl/certs/ca-certificates.crt"), "wb") as bundle:
        for cert in certs:
            with open(cert, "rb") as source:
                bundle.write(source.read().rstrip(b"\n") + b"\n")
    os.symlink("/etc/ssl/certs", path("usr/lib/ssl/certs"))
    os.symlink("/etc/ssl/certs/ca-certificates.crt", path("usr/lib/ssl/cert.pem"))
    # ldconfig: the cache through which ld.so finds the multiarch libraries.
    _run("ldconfig", "-r", rootfs)
    # py3compile: the standard library's bytecode, compiled by the image's
    # own interpreter (the root filesystem is read-only at run time).
    if os.geteuid() == 0:
        for stdlib in glob.glob(path("usr/lib/python3.*")):
            _run("chroot", rootfs, "/usr/bin/python3", "-m", "compileall", "-q", stdlib[len(rootfs) :])


def baseTar(cache: str) -> tuple[str, str]:
    """
    The base's tar file in C{cache} (made unless present) and its key.  When
    apt's package lists are missing or stale and this runs as root, they are
    refreshed (C{apt-get update}) once.
    """
    try:
        return _baseTar(cache)
    except SystemExit:
        if os.geteuid() != 0:
            raise
    _run("apt-get", "update", "-qq")
    return _baseTar(cache)


def _baseTar(cache: str) -> tuple[str, str]:
    pinned = versions(closure())
    os.makedirs(cache, exist_ok=True)
    digest = key(pinned)
    out = os.path.join(cache, f"suite-base-{digest}.tar")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(out):
            build(pinned, os.path.join(cache, "debs"), out)
            # one base at a time: drop earlier ones and packages no longer used
            for stale in glob.glob(os.path.join(cache, "suite-base-*.tar")):
                if stale != out:
                    os.unlink(stale)
            keep = {m for p in pinned for m in glob.glob(os.path.join(cache, "debs", _debGlob(p)))}
            for deb in glob.glob(os.path.join(cache, "debs", "*.deb")):
                if deb not in keep:
                    os.unlink(deb)
    return out, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].strip())
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--cache", default=os.path.join(here, "var", "containers"))
    parser.add_argument("--list", action="store_true", help="print the packages and stop")
    args = parser.parse_args()
    if args.list:
        print("\n".join(versions(closure())))
        return
    print(baseTar(args.cache)[0])


if __name__ == "__main__":
    main()
