"""
The production install (scripts/install.sh, docs/install.md) run for real
into a staging root (C{DESTDIR}): no real /opt, /etc or users are touched,
service users are not created (C{CREATE_USERS=no}), so ownership is left to
the real install; modes, layout, the working venv, idempotent re-runs, the
units (checked by C{systemd-analyze verify} when present) and uninstall are.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SRC = Path(__file__).resolve().parents[2]
SCRIPT = SRC / "scripts" / "install.sh"
PYTHON = getattr(sys, "_base_executable", sys.executable)

#: Templates and the instance each is verified as.
TEMPLATES = {
    "suite@.service": "spacecomms",
    "ceptra@.service": "a",
    "clustor-cp@.service": "main",
    "goop-rendezvous@.service": "8787",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class InstallTests(SynchronousTestCase):
    """
    C{scripts/install.sh} into a staging root, twice, then C{--uninstall}.
    """

    def run_install(self, root: Path, *extra: str) -> str:
        env = dict(os.environ, CREATE_USERS="no")
        done = subprocess.run(
            ["sh", str(SCRIPT), f"DESTDIR={root}", f"PYTHON={PYTHON}", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def verify_units(self, root: Path, scratch: Path) -> None:
        """
        C{systemd-analyze verify} on the installed units, their venv path
        pointed at the staged venv (verify checks the commands exist).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            print("systemd-analyze not installed: unit verification skipped")
            return
        scratch.mkdir()
        names = []
        for unit in sorted((root / "etc/systemd/system").glob("*.service")):
            text = unit.read_text().replace("/opt/suite/venv", f"{root}/opt/suite/venv")
            name = unit.name
            if name in TEMPLATES:
                name = name.replace("@.", f"@{TEMPLATES[name]}.")
            (scratch / name).write_text(text)
            names.append(name)
        self.assertIn("spacecomms.service", names)
        done = subprocess.run(
            [analyze, "verify", *names], cwd=scratch, capture_output=True, text=True, timeout=120
        )
        self.assertEqual((done.returncode, done.stderr.strip()), (0, ""), done.stdout + done.stderr)

    def test_installUpgradeUninstall(self) -> None:
        """
        A first install lays out the venv, command links (with the guides'
        names), configuration with restrictive modes and the units; a second
        run keeps an edited configuration and refreshes the shipped example;
        C{--uninstall} removes the program and keeps data and configuration.
        """
        root = Path(self.mktemp()).resolve()
        self.run_install(root)

        venv = root / "opt/suite/venv"
        out = subprocess.run(
            [str(venv / "bin/python"), str(venv / "bin/spacecomms"), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("validate-config", out.stdout)
        head = "\n".join((venv / "bin/spacecomms").read_text().splitlines()[:3])
        self.assertIn("/opt/suite/venv/bin/python", head)
        self.assertNotIn(str(root), head)
        links = root / "usr/local/bin"
        self.assertEqual(
            os.readlink(links / "constellation-agent"), "/opt/suite/venv/bin/constellation-agent"
        )
        self.assertEqual(os.readlink(links / "spacecomms"), "/opt/suite/venv/bin/spacecomms")
        self.assertEqual(os.readlink(links / "goop2"), "/opt/suite/venv/bin/goop2")

        modes = {
            "etc/spacecomms": 0o750,
            "etc/spacecomms/config.yaml": 0o640,
            "etc/suite/spacecomms.env": 0o640,
            "etc/suite/constellation.env": 0o640,
            "var/lib/spacecomms": 0o750,
            "opt/constellation/secrets": 0o700,
            "opt/constellation/data": 0o750,
            "opt/goop/shared": 0o770,
            "etc/systemd/system/spacecomms.service": 0o644,
        }
        self.assertEqual({p: _mode(root / p) for p in modes}, modes)
        for port in ("8787", "8788", "8789"):
            conf = (root / "opt/goop/rendezvous" / port / "goop.json").read_text()
            self.assertIn(f'"rendezvous_port": {port}', conf)
            self.assertIn('"/opt/goop/shared/peers.db"', conf)
        unit = (root / "etc/systemd/system/spacecomms.service").read_text()
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", unit)
        self.assertIn("ReadWritePaths=/var/lib/spacecomms", unit)

        self.verify_units(root, Path(self.mktemp()))

        config = root / "etc/spacecomms/config.yaml"
        config.write_text("# edited by the operator\n")
        (root / "etc/spacecomms/config.yaml.example").write_text("stale\n")
        self.run_install(root)
        self.assertEqual(config.read_text(), "# edited by the operator\n")
        self.assertEqual(
            (root / "etc/spacecomms/config.yaml.example").read_text(),
            (SRC / "conf/spacecomms/config.yaml").read_text(),
        )
        self.assertTrue((venv / "bin/spacecomms").exists())
        self.assertFalse((root / "opt/suite/venv.new").exists())

        self.run_install(root, "--uninstall")
        self.assertFalse(venv.exists())
        self.assertFalse((links / "constellation-agent").is_symlink())
        self.assertFalse((root / "etc/systemd/system/spacecomms.service").exists())
        self.assertEqual(config.read_text(), "# edited by the operator\n")
        self.assertTrue((root / "var/lib/spacecomms").is_dir())

    def test_refusesUnknownArgument(self) -> None:
        """
        A mistyped argument stops the script with one line and exit code 2
        before anything is written.
        """
        root = Path(self.mktemp()).resolve()
        done = subprocess.run(
            ["sh", str(SCRIPT), f"DESTDIR={root}", "--upgrade"], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 2)
        self.assertIn("unknown argument --upgrade", done.stderr)
        self.assertFalse(root.exists())
