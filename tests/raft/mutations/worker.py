"""
Child process of L{tests.raft.mutations.run}: put the planted copy of
C{suite.raft} first on C{suite.__path__}, run the scenarios named on stdin
(JSON), print one JSON line per scenario.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    spec = json.load(sys.stdin)
    import suite

    suite.__path__.insert(0, spec["path"])
    import suite.raft

    if not os.path.abspath(suite.raft.__file__).startswith(os.path.abspath(spec["path"])):
        raise SystemExit(f"suite.raft imported from {suite.raft.__file__}, not the planted copy")
    from tests.raft.scenarios import FAMILIES
    from tests.support.raftsim import InvariantViolation

    for family, seed in spec["scenarios"]:
        try:
            FAMILIES[family].run(seed)
        except InvariantViolation as e:
            caught, why = True, str(e).splitlines()[0]
        except Exception as e:  # the planted bug broke the code outright: not a checker's catch
            caught, why = False, f"crashed: {type(e).__name__}: {e}".splitlines()[0]
        else:
            caught, why = False, ""
        print(json.dumps({"family": family, "seed": seed, "caught": caught, "why": why[:300]}), flush=True)
        if caught and spec["stopAtFirst"]:
            break


if __name__ == "__main__":
    main()
