"""
The member machine as a table (L{suite.gossip.member}): every input in every
state, with the state after, what it regossips and announces in order, the
incarnation it keeps, and the suspicion timers left.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.member import Member, MemberCore, MemberInputs, Suspicion, newMemberMachine
from suite.gossip.messages import Update


def stateOf(inputs: MemberInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class Actions:
    """
    Records regossiped updates (C{"Suspect 3"}) and announcements
    (C{"notify suspect suspect"}) in one list, in order.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[str] = []

    def notify(self, event: str, member: Member) -> None:
        self.events.append(f"notify {event} {member.status}")

    def rebroadcast(self, message: Update) -> None:
        self.events.append(f"{type(message).__name__} {message.incarnation}")

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        return Suspicion(self.clock, 4.0, 24.0, 2, source, expire, "me")


#: One call of each input (the machine's whole alphabet).  The member starts
#: alive at incarnation 3 on 10.0.0.1; the alive comes from a new address.
CALLS: dict[str, Callable[[MemberInputs], None]] = {
    "aliveNewer": lambda m: m.aliveNewer(9, ("10.0.0.2", 7946), {}),
    "suspected": lambda m: m.suspected(3, "b"),
    "suspectedAgain": lambda m: m.suspectedAgain(4, "b"),
    "declaredDead": lambda m: m.declaredDead(3, "b"),
    "departed": lambda m: m.departed(3),
    "suspicionTimedOut": lambda m: m.suspicionTimedOut(),
    "removed": lambda m: m.removed(),
}

#: How to reach each state from a new machine.
PATHS: dict[str, Callable[[MemberInputs], None]] = {
    "Alive": lambda m: None,
    "Suspect": lambda m: m.suspected(3, "a"),
    "Dead": lambda m: m.declaredDead(3, "a"),
    "Left": lambda m: m.departed(3),
    "Removed": lambda m: m.removed(),
}

SUSPECT = ["Suspect 3", "notify suspect suspect"]
AGAIN = ["Suspect 4", "notify suspect suspect"]
DEAD = ["Dead 3", "notify dead dead"]
LEFT = ["Left 3", "notify left left"]
JOINED = ["Alive 9", "notify joined alive"]
UPDATED = ["Alive 9", "notify updated alive"]

#: (state, input) -> (state after, events, incarnation after, timers).
#: Pairs not listed leave the state, the incarnation (3) and the timers
#: (one in Suspect) alone and say nothing.  A suspicionTimedOut fed in
#: Suspect leaves its timer: in service it is that timer firing.
ANSWERS: dict[tuple[str, str], tuple[str, list[str], int, int]] = {
    ("Alive", "aliveNewer"): ("Alive", UPDATED, 9, 0),
    ("Alive", "suspected"): ("Suspect", SUSPECT, 3, 1),
    ("Alive", "suspectedAgain"): ("Suspect", AGAIN, 4, 1),
    ("Alive", "declaredDead"): ("Dead", DEAD, 3, 0),
    ("Alive", "departed"): ("Left", LEFT, 3, 0),
    ("Alive", "removed"): ("Removed", [], 3, 0),
    ("Suspect", "aliveNewer"): ("Alive", UPDATED, 9, 0),
    ("Suspect", "suspected"): ("Suspect", ["Suspect 3"], 3, 1),
    ("Suspect", "suspectedAgain"): ("Suspect", AGAIN, 4, 1),
    ("Suspect", "declaredDead"): ("Dead", DEAD, 3, 0),
    ("Suspect", "departed"): ("Left", LEFT, 3, 0),
    ("Suspect", "suspicionTimedOut"): ("Dead", DEAD, 3, 1),
    ("Suspect", "removed"): ("Removed", [], 3, 0),
    ("Dead", "aliveNewer"): ("Alive", JOINED, 9, 0),
    ("Dead", "departed"): ("Left", LEFT, 3, 0),
    ("Dead", "removed"): ("Removed", [], 3, 0),
    ("Left", "aliveNewer"): ("Alive", JOINED, 9, 0),
    ("Left", "removed"): ("Removed", [], 3, 0),
}


class MemberTableTests(SynchronousTestCase):
    """
    Every input in every state of the member machine.
    """

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet.
        """
        self.assertEqual(set(CALLS), {n for n in vars(MemberInputs) if not n.startswith("_")})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, the updates and
        announcements in order, the incarnation, the timers pending.
        """
        for state, path in PATHS.items():
            for name, call in CALLS.items():
                clock = Clock()
                actions = Actions(clock)
                core = MemberCore("m", ("10.0.0.1", 7946), 3, {}, actions, clock=clock)
                machine = newMemberMachine(core)
                path(machine)
                self.assertEqual(stateOf(machine), state)
                del actions.events[:]
                default: tuple[str, list[str], int, int] = (state, [], 3, 1 if state == "Suspect" else 0)
                self.assertIsNone(call(machine))
                self.assertEqual(
                    (stateOf(machine), actions.events, core.incarnation, len(clock.getDelayedCalls())),
                    ANSWERS.get((state, name), default),
                    f"{state} + {name}",
                )
