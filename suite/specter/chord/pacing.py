"""
Whether a frame connection is read (L{suite.specter.chord.wire}): the
end that answers calls stops reading while its peer does not take the
answers or keeps too many calls in flight, and reads on once the load is
back under the limits.

Reading machine (L{ReadingInputs}): inputs C{congested}, C{relieved},
C{lost}; outputs C{pause}, C{resume} (on L{ReadingCore}); states Reading,
Paused, Closed.  The connection feeds C{congested} and C{relieved} when
its counters cross a limit; the machine makes repeated ones harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder

__all__ = ["ReadingCore", "ReadingInputs", "ReadingMachine"]


class ReadingInputs(Protocol):
    def congested(self) -> None:
        "Unread answers or calls in flight reached a limit, no response of this end's own being due."

    def relieved(self) -> None:
        "The load is back under the limits, or a response of this end's own is due."

    def lost(self) -> None:
        "The connection is gone."


@dataclass
class ReadingCore:
    """
    What the machine acts on: C{pause()} stops reading the transport,
    C{resume()} reads it again (frames already received are parsed by the
    connection once the input returns).
    """

    pause: Callable[[], None]
    resume: Callable[[], None]


def _build() -> TypeMachine[ReadingInputs, ReadingCore]:
    b = TypeMachineBuilder(ReadingInputs, ReadingCore)
    reading = b.state("Reading")
    paused = b.state("Paused")
    closed = b.state("Closed")

    @reading.upon(ReadingInputs.congested).to(paused)
    def stopReading(inputs: ReadingInputs, core: ReadingCore) -> None:
        core.pause()

    @paused.upon(ReadingInputs.relieved).to(reading)
    def readOn(inputs: ReadingInputs, core: ReadingCore) -> None:
        core.resume()

    reading.upon(ReadingInputs.relieved).loop().returns(None)
    paused.upon(ReadingInputs.congested).loop().returns(None)
    reading.upon(ReadingInputs.lost).to(closed).returns(None)
    paused.upon(ReadingInputs.lost).to(closed).returns(None)
    # Closed: answers of calls still in flight change nothing
    closed.upon(ReadingInputs.congested).loop().returns(None)
    closed.upon(ReadingInputs.relieved).loop().returns(None)
    closed.upon(ReadingInputs.lost).loop().returns(None)
    return b.build()


ReadingMachine = _build()
