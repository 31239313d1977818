"""
Constant-time transition lookup for automat machines on hot paths.

automat finds the transition for an input by scanning every transition of
the machine and comparing states by value: for the role machine (a hundred
transitions) that is tens of microseconds per input.  Machines that take
inputs on hot paths (Raft roles and replication progress on every proposal
and answer; Specter's visitor, HTTP/2 stream, tunnel stream and gateway
lifecycle machines on every request) use L{indexed}, which gives a built
machine a lookup table keyed by (state, input), built once from the
transitions automat recorded.  The transitions and
their outputs are automat's own; only the search is replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from automat import TypeMachine

Inputs = TypeVar("Inputs")
Core = TypeVar("Core")


def indexed(machine: TypeMachine[Inputs, Core]) -> TypeMachine[Inputs, Core]:
    """
    Give C{machine}'s automaton a (state, input) table for its lookups;
    return C{machine}.  An input that has no transition in the current
    state still goes to automat (which raises C{NoTransition}).
    """
    automaton = machine.__automat_automaton__
    # Keyed by the state's identity: automat's states hash by value, which
    # costs more than the rest of the lookup.  The states live as long as
    # the machine.
    table: dict[tuple[int, str], tuple[Any, tuple[Any, ...]]] = {
        (id(state), symbol): (newState, tuple(outputs))
        for state, symbol, newState, outputs in automaton.allTransitions()
    }
    scan = automaton.outputForInput

    def outputForInput(state: Any, symbol: str) -> tuple[Any, Sequence[Any]]:
        found = table.get((id(state), symbol))
        if found is None:
            return scan(state, symbol)
        return found

    automaton.outputForInput = outputForInput  # type: ignore[method-assign,assignment]
    return machine
