"""
CPU per call of two per-CDM costs outside the protocol work, each against
its general path, alternated in one process (about 20 s):

- log: one C{routing decision} line through L{twisted.logger.Logger}, the
  suite's level filter and a file observer, written by the one-pass
  L{suite.logging.formatJSON} and by the general path
  (C{_formatJSONGeneral}: Twisted's formatter on a redacted copy).
- guard: the bearer guard's traversal step for C{POST /cdms} with a valid
  token, accepted synchronously (the token checker's C{avatarIdNow}) and
  through the general Deferred path (the same checker without it).
- decode: C{suite.spacecomms.cdm.decode} of the benchmark's sample CDM as
  JSON (C{POST /cdms}) and as KVN, and the JSON model building alone
  (C{fromDict}, as for a relayed CDM), by this tree's code and, with
  C{--baseline REV}, by the CDM package of git revision REV loaded beside it.

Last line: key=value figures (best round, microseconds of CPU per call).
Usage: bench/spacecomms_hotpaths.py [--baseline REV] [--only PREFIX] [ROUNDS]
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import _benchcli
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred
from twisted.logger import FileLogObserver, Logger, LogPublisher
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from suite import logging as suitelogging
from suite.cred.interfaces import IBearerToken, IPrincipal, IPrincipalSource
from suite.cred.tokens import READ, WRITE, TokenChecker
from suite.cred.web import requireBearer
from suite.spacecomms.api import _rule

HEADLINE = [
    "log_general_us",
    "log_onepass_us",
    "guard_general_us",
    "guard_sync_us",
    "decode_json_new_us",
    "decode_kvn_new_us",
    "fromdict_new_us",
]

TOKEN = "s3cret-token-value-0123456789"


def logLine(formatter: Callable[[Any], str]) -> Callable[[int], None]:
    stream = io.StringIO()
    log = Logger(
        observer=LogPublisher(suitelogging.filtered(FileLogObserver(stream, formatter), "info")),
        namespace="suite.spacecomms.inbound",
    )

    def run(n: int) -> None:
        for i in range(n):
            log.info(
                "routing decision: accepted {message_type} {message_id} from {peer} for {kind} {key}"
                " (origin {origin}); {forwarding}",
                message_type="CDM_ANNOUNCE",
                message_id=f"a3f1c2d4-5e6f-7081-92a3-{i:012d}",
                node="node-b",
                peer="node-a",
                kind="cdm",
                key=f"CDM-{i}",
                origin="node-a",
                forwarding="forwarded to node-c",
            )
        stream.seek(0)
        stream.truncate()

    return run


@implementer(ICredentialsChecker, IPrincipalSource)
class _GeneralOnly:
    """
    The token checker without its synchronous answer.
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(self, checker: TokenChecker) -> None:
        self._checker = checker

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return self._checker.requestAvatarId(credentials)

    def principalFor(self, avatarId: str) -> IPrincipal:
        return self._checker.principalFor(avatarId)


class _Leaf(Resource):
    isLeaf = True


def guard(general: bool) -> Callable[[int], None]:
    checker = TokenChecker({"op": (TOKEN, [READ, WRITE])})
    wrapped = requireBearer(_Leaf(), _GeneralOnly(checker) if general else checker, _rule(WRITE))

    def run(n: int) -> None:
        for _ in range(n):
            request = DummyRequest([b"cdms"])
            request.method = b"POST"
            request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + TOKEN.encode()])
            request.prepath = [b"cdms"]
            request.postpath = []
            if not isinstance(wrapped.getChildWithDefault(b"cdms", request), _Leaf):
                raise SystemExit("the guard refused a valid token")

    return run


_CDM_MODULES = ("fields", "model", "jsonfmt", "kvn", "xml", "sample")


def baselineCDM(rev: str, where: str) -> ModuleType:
    """
    The C{suite.spacecomms.cdm} package of git revision C{rev}, importable
    beside this tree's as C{cdm_<rev>} (its own imports renamed to match).
    """
    name = "cdm_" + "".join(c if c.isalnum() else "_" for c in rev)
    os.makedirs(os.path.join(where, name), exist_ok=True)
    for module in ("__init__", *_CDM_MODULES):
        text = subprocess.run(
            ["git", "show", f"{rev}:suite/spacecomms/cdm/{module}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        with open(os.path.join(where, name, module + ".py"), "w") as f:
            f.write(text.replace("suite.spacecomms.cdm", name))
    sys.path.insert(0, where)
    return importlib.import_module(name)


def decodeCases(cdm: ModuleType, label: str) -> dict[str, tuple[Callable[[int], None], int]]:
    sample = importlib.import_module(cdm.__name__ + ".sample")
    jsonfmt = importlib.import_module(cdm.__name__ + ".jsonfmt")
    example = sample.sampleCDM("MSGIDXX", object2="OBJIDXX", created=1.7e9, tca=1.7e9 + 3 * 86400)
    jsonText = cdm.encode(example, "json").encode()
    kvnText = cdm.encode(example, "kvn").encode()
    doc = json.loads(jsonText)

    def run(data: bytes, fmt: str) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for _ in range(n):
                cdm.decode(data, fmt)

        return loop

    def build(n: int) -> None:
        for _ in range(n):
            jsonfmt.fromDict(doc)

    return {
        f"decode_json_{label}": (run(jsonText, "json"), 3000),
        f"decode_kvn_{label}": (run(kvnText, "kvn"), 1500),
        f"fromdict_{label}": (build, 3000),
    }


def perCall(run: Callable[[int], None], n: int) -> float:
    start = time.process_time()
    run(n)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = _benchcli.parser(
        __doc__,
        HEADLINE,
        "With --baseline also decode_json_old_us decode_kvn_old_us fromdict_old_us (before the new ones);"
        " --only keeps the matching keys.",
    )
    parser.add_argument("rounds", nargs="?", type=int, default=3, help="rounds (the best is kept; 3)")
    parser.add_argument("--baseline", help="git revision whose CDM package to time beside this tree's")
    parser.add_argument(
        "--only", help="run only the cases whose names start with one of these (comma-separated)"
    )
    args = parser.parse_args()
    rounds = args.rounds
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    from suite.spacecomms import cdm as currentCDM

    cases: dict[str, tuple[Callable[[int], None], int]] = {
        "log_general": (logLine(suitelogging._formatJSONGeneral), 20000),
        "log_onepass": (logLine(suitelogging.formatJSON), 20000),
        "guard_general": (guard(True), 20000),
        "guard_sync": (guard(False), 20000),
    }
    scratch = _benchcli.tempdir("hotpaths-")
    if args.baseline:
        _benchcli.setPhase(f"loading the CDM package of {args.baseline}")
        cases.update(decodeCases(baselineCDM(args.baseline, scratch), "old"))
    cases.update(decodeCases(currentCDM, "new"))
    if args.only:
        cases = {k: v for k, v in cases.items() if k.startswith(tuple(args.only.split(",")))}
    sizes = {
        fmt: len(currentCDM.encode(importlib.import_module("suite.spacecomms.cdm.sample").sampleCDM(), fmt))
        for fmt in ("json", "kvn")
    }
    print(f"sample CDM: {sizes['json']} bytes as JSON, {sizes['kvn']} bytes as KVN")
    best: dict[str, float] = {}
    for r in range(rounds):
        _benchcli.setPhase(f"round {r + 1}")
        figures = {name: perCall(run, n) for name, (run, n) in cases.items()}
        for name, us in figures.items():
            best[name] = min(best.get(name, us), us)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} us" for k, v in figures.items()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(" ".join(f"{k}_us={v:.1f}" for k, v in best.items()))


if __name__ == "__main__":
    _benchcli.run(main)
