"""
CCSDS 508.0-B-1 Conjunction Data Messages: the field tables, a validated
value object and codecs for KVN, XML and JSON.
"""

from suite.spacecomms.cdm.model import CDM, CDMError, Segment, decode, encode, validate

__all__ = ["CDM", "CDMError", "Segment", "decode", "encode", "validate"]
