"""
A real OpenLDAP C{slapd} for tests, on a loopback port, from a temporary
cn=config directory; always killed in cleanup.

    server = SlapdServer(self, users={"alice": "pw"}, groups={"operators": ["alice"]})
    await server.start()
    server.url            # "ldap://127.0.0.1:PORT"
    server.userDN("alice")  # "uid=alice,ou=people,dc=example,dc=org"

The directory holds C{dc=example,dc=org} with C{ou=people} (inetOrgPerson
entries, C{uid=NAME}) and C{ou=groups} (groupOfNames, C{cn=NAME}); more
entries can be passed as LDIF.  The database is C{back_mdb} with the core,
cosine and inetorgperson schemas; passwords are stored as C{{SSHA}}.

When running as root, the files are handed to C{nobody:nogroup} and slapd
runs as that user through C{setpriv}.  L{skipUnlessSlapd} raises
L{SkipTest} when the slapd binary is absent.
"""

from __future__ import annotations

import base64
import datetime
import grp
import hashlib
import ipaddress
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.process import DaemonProcess, freePort

__all__ = [
    "SlapdServer",
    "findSlapd",
    "skipUnlessSlapd",
    "sshaHash",
    "mintTestCA",
    "mintTestServerCertificate",
    "pem",
]

_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
MODULE_PATH = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"


def findSlapd() -> tuple[str, str] | None:
    """
    Paths of C{slapd} and C{slapadd}, or C{None} if either is absent.
    """
    slapd = shutil.which("slapd", path=_SEARCH)
    slapadd = shutil.which("slapadd", path=_SEARCH)
    if slapd is None or slapadd is None:
        return None
    return slapd, slapadd


def skipUnlessSlapd() -> tuple[str, str]:
    """
    The slapd/slapadd paths, or raise L{SkipTest} saying they are missing.
    """
    found = findSlapd()
    if found is None:
        raise SkipTest("slapd/slapadd not installed (Debian package 'slapd'); LDAP tests need a real server")
    return found


def sshaHash(password: str) -> str:
    """
    An RFC 2307 C{{SSHA}} hash of C{password}.
    """
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def mintTestCA(commonName: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A throwaway self-signed CA (P-256, valid one day).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def mintTestServerCertificate(
    caCert: x509.Certificate,
    caKey: ec.EllipticCurvePrivateKey,
    commonName: str,
    dnsNames: Sequence[str] = (),
    ipAddresses: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A throwaway server certificate signed by C{caCert}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dnsNames]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ipAddresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)]))
        .issuer_name(caCert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(caKey, hashes.SHA256())
    )
    return cert, key


def pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    """
    PEM bytes of a certificate or (unencrypted PKCS#8) private key.
    """
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _worldTraversable(path: str) -> bool:
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class SlapdServer:
    """
    One slapd owned by a test case.
    """

    suffix = "dc=example,dc=org"
    rootDN = "cn=admin,dc=example,dc=org"

    def __init__(
        self,
        testCase: TestCase,
        users: Mapping[str, str] = {},
        groups: Mapping[str, Sequence[str]] = {},
        extraLDIF: str = "",
        allowUnauthenticatedBind: bool = True,
        tls: bool = False,
    ) -> None:
        """
        @param users: C{{uid: password}} under C{ou=people}.
        @param groups: C{{cn: [uid, ...]}} groupOfNames under C{ou=groups}.
        @param extraLDIF: more entries, appended to the data LDIF.
        @param allowUnauthenticatedBind: C{olcAllows: bind_anon_dn}, so the
            server itself accepts a DN with an empty password (as many
            servers do) and a client's refusal of it is what gets tested.
        @param tls: also serve LDAPS on L{ldapsPort} and StartTLS on the
            plain port, with a certificate for C{localhost}/C{127.0.0.1}
            from a fresh CA whose PEM is at L{caPath}.
        """
        self.testCase = testCase
        self.users = dict(users)
        self.groups = {k: list(v) for k, v in groups.items()}
        self.extraLDIF = extraLDIF
        self.allowUnauthenticatedBind = allowUnauthenticatedBind
        self.rootPassword = base64.b32encode(os.urandom(10)).decode("ascii")
        self.tls = tls
        self.port = 0
        self.ldapsPort = 0
        self.process: DaemonProcess | None = None
        self.directory = self._makeDirectory()

    def _makeDirectory(self) -> str:
        base = os.path.abspath(self.testCase.mktemp())
        os.makedirs(base)
        if os.geteuid() == 0 and not _worldTraversable(base):
            # slapd runs as nobody and must reach its files.
            base = tempfile.mkdtemp(prefix="slapd-test-")
            os.chmod(base, 0o755)
            self.testCase.addCleanup(shutil.rmtree, base, True)
        return base

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldapsURL(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldapsPort}"

    @property
    def caPath(self) -> str:
        return os.path.join(self.directory, "ca.pem")

    def _writeTLSFiles(self) -> None:
        caCert, caKey = mintTestCA("slapd test CA")
        cert, key = mintTestServerCertificate(caCert, caKey, "localhost", ["localhost"], ["127.0.0.1"])
        for name, data in [("ca.pem", pem(caCert)), ("server.pem", pem(cert)), ("server.key", pem(key))]:
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(data)

    def userDN(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.suffix}"

    def groupDN(self, cn: str) -> str:
        return f"cn={cn},ou=groups,{self.suffix}"

    def configLDIF(self) -> str:
        d = self.directory
        allows = "olcAllows: bind_anon_dn\n" if self.allowUnauthenticatedBind else ""
        if self.tls:
            allows += (
                f"olcTLSCACertificateFile: {d}/ca.pem\n"
                f"olcTLSCertificateFile: {d}/server.pem\n"
                f"olcTLSCertificateKeyFile: {d}/server.key\n"
            )
        return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
{allows}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_PATH}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://{SCHEMA_DIR}/core.ldif

include: file://{SCHEMA_DIR}/cosine.ldif

include: file://{SCHEMA_DIR}/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {self.suffix}
olcRootDN: {self.rootDN}
olcRootPW: {sshaHash(self.rootPassword)}
olcDbDirectory: {d}/db
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by * read
"""

    def dataLDIF(self) -> str:
        s = self.suffix
        parts = [
            f"dn: {s}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
            f"dn: ou=people,{s}\nobjectClass: organizationalUnit\nou: people\n",
            f"dn: ou=groups,{s}\nobjectClass: organizationalUnit\nou: groups\n",
        ]
        for uid, password in self.users.items():
            parts.append(
                f"dn: {self.userDN(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                f"userPassword: {sshaHash(password)}\n"
            )
        for cn, members in self.groups.items():
            lines = [f"dn: {self.groupDN(cn)}", "objectClass: groupOfNames", f"cn: {cn}"]
            # groupOfNames needs at least one member.
            lines += [f"member: {self.userDN(m)}" for m in members] or [f"member: {self.rootDN}"]
            parts.append("\n".join(lines) + "\n")
        if self.extraLDIF.strip():
            parts.append(self.extraLDIF.strip() + "\n")
        return "\n".join(parts)

    async def _run(self, argv: list[str], what: str) -> None:
        out, err, code = await getProcessOutputAndValue(
            argv[0], argv[1:], env=dict(os.environ), reactor=reactor
        )
        if code != 0:
            raise AssertionError(
                f"{what} failed ({code}): {err.decode(errors='replace')}{out.decode(errors='replace')}"
            )

    async def start(self) -> SlapdServer:
        """
        Build the configuration and database, start slapd, wait for its port.
        """
        slapd, slapadd = skipUnlessSlapd()
        d = self.directory
        confDir = os.path.join(d, "slapd.d")
        os.makedirs(confDir)
        os.makedirs(os.path.join(d, "db"))
        if self.tls:
            self._writeTLSFiles()
        with open(os.path.join(d, "config.ldif"), "w") as f:
            f.write(self.configLDIF())
        with open(os.path.join(d, "data.ldif"), "w") as f:
            f.write(self.dataLDIF())
        await self._run(
            [slapadd, "-q", "-n0", "-F", confDir, "-l", os.path.join(d, "config.ldif")], "slapadd -n0"
        )
        await self._run(
            [slapadd, "-q", "-n1", "-F", confDir, "-l", os.path.join(d, "data.ldif")], "slapadd -n1"
        )
        self.port = freePort()
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls:
            self.ldapsPort = freePort()
            urls += f" ldaps://127.0.0.1:{self.ldapsPort}/"
        argv = [slapd, "-h", urls, "-F", confDir, "-d", "0"]
        if os.geteuid() == 0:
            uid = pwd.getpwnam("nobody").pw_uid
            gid = grp.getgrnam("nogroup").gr_gid
            for root, dirs, files in os.walk(d):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
            os.chown(d, uid, gid)
            setpriv = shutil.which("setpriv", path=_SEARCH) or "setpriv"
            argv = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
        self.process = DaemonProcess(self.testCase, argv, name="slapd", stopTimeout=5.0)
        self.process.start()
        await self.process.waitForPort(self.port, timeout=20.0)
        if self.tls:
            await self.process.waitForPort(self.ldapsPort, timeout=20.0)
        return self

    async def stop(self) -> None:
        """
        Stop slapd now (cleanup does it anyway).
        """
        if self.process is not None and self.process.running():
            await self.process.stop(timeout=10.0)
