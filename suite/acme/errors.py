"""
Exceptions of the ACME client: every failure the caller sees is an
L{ACMEError} whose message is one line saying what went wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ACME_ERROR_PREFIX",
    "ACMEError",
    "ACMEServerError",
    "ACMEProtocolError",
    "ACMETimeout",
    "ChallengeFailed",
    "ResponseTooLarge",
]

#: Prefix of the problem types RFC 8555 section 6.7 defines.
ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"


class ACMEError(Exception):
    """
    Base of every error the ACME client raises.
    """


class ACMEServerError(ACMEError):
    """
    The server answered with a problem document (RFC 7807), such as
    C{urn:ietf:params:acme:error:rateLimited}.

    @ivar type: the problem type URN.
    @ivar detail: the server's human-readable detail (may be empty).
    @ivar status: the HTTP status code, or C{None} for a problem embedded
        in an order, authorization or challenge.
    @ivar subproblems: per-identifier problems as C{(identifier, type, detail)}.
    """

    def __init__(
        self,
        type: str,
        detail: str,
        status: int | None = None,
        url: str | None = None,
        subproblems: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.type = type
        self.detail = detail
        self.status = status
        self.url = url
        self.subproblems = subproblems
        text = f"ACME server error {type}: {detail or '(no detail)'}"
        if status is not None:
            text += f" (HTTP {status}"
            text += f" from {url})" if url else ")"
        for identifier, subType, subDetail in subproblems:
            text += f"; {identifier}: {subType}: {subDetail}"
        super().__init__(text)

    @property
    def code(self) -> str:
        """
        The problem type without the ACME prefix (C{badNonce}, C{dns}, ...).
        """
        if self.type.startswith(ACME_ERROR_PREFIX):
            return self.type[len(ACME_ERROR_PREFIX) :]
        return self.type

    @classmethod
    def fromProblem(
        cls, problem: Mapping[str, Any], status: int | None = None, url: str | None = None
    ) -> ACMEServerError:
        """
        Build the exception from a decoded problem document.
        """
        subproblems = []
        for sub in problem.get("subproblems") or ():
            if not isinstance(sub, Mapping):
                continue
            ident = sub.get("identifier") or {}
            subproblems.append(
                (
                    str(ident.get("value", "?")) if isinstance(ident, Mapping) else "?",
                    str(sub.get("type", "about:blank")),
                    _oneLine(str(sub.get("detail", ""))),
                )
            )
        return cls(
            str(problem.get("type", "about:blank")),
            _oneLine(str(problem.get("detail", ""))),
            status,
            url,
            tuple(subproblems),
        )


class ChallengeFailed(ACMEServerError):
    """
    The server could not validate a challenge: the authorization went
    C{invalid}.  C{identifier} names the domain.
    """

    identifier: str = ""

    @classmethod
    def forIdentifier(cls, identifier: str, problem: Mapping[str, Any] | None) -> ChallengeFailed:
        """
        Build the exception for C{identifier} from the failed challenge's
        problem document (if the server gave one).
        """
        problem = problem or {"type": "about:blank", "detail": "authorization is invalid"}
        base = ACMEServerError.fromProblem(problem)
        error = cls(
            base.type,
            f"validation of {identifier} failed: {base.detail or '(no detail)'}",
            None,
            None,
            base.subproblems,
        )
        error.identifier = identifier
        return error


class ACMEProtocolError(ACMEError):
    """
    The server's answer was not what RFC 8555 allows (an unexpected status
    code without a problem document, a missing header, malformed JSON).
    """


class ResponseTooLarge(ACMEProtocolError):
    """
    A response body was larger than the client's limit.
    """


class ACMETimeout(ACMEError):
    """
    An order or authorization did not reach a final status in time.
    """


def _oneLine(text: str) -> str:
    return " ".join(text.split())
