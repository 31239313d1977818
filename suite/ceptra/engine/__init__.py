"""
The CEPtra CEP engine: the deterministic state machine of a partition.

Pure Python, no reactor and no clock: L{PartitionEngine.apply} takes the
committed Raft entries of one partition, made by L{encodeEvents} and
L{encodeRules}, and returns the results they produce.
"""

from suite.ceptra.engine.codec import encodeEvents, encodeRules
from suite.ceptra.engine.engine import PartitionEngine
from suite.ceptra.engine.errors import EngineError
from suite.ceptra.engine.rules import validateRules

__all__ = ["EngineError", "PartitionEngine", "encodeEvents", "encodeRules", "validateRules"]
