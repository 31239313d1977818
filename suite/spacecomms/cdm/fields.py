"""
The CDM keyword tables of CCSDS 508.0-B-1 (header, relative metadata/data,
per-object metadata and data), with each keyword's type, obligation, units
and enumeration.  Every codec and the validator are driven by these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Field",
    "HEADER",
    "RELATIVE",
    "METADATA",
    "DATA",
    "HEADER_BY_NAME",
    "RELATIVE_BY_NAME",
    "METADATA_BY_NAME",
    "DATA_BY_NAME",
    "RELATIVE_STATE_VECTOR",
    "DATA_GROUPS",
    "VERSION_KEY",
    "SUPPORTED_VERSIONS",
]

VERSION_KEY = "CCSDS_CDM_VERS"
SUPPORTED_VERSIONS = ("1.0",)


@dataclass(frozen=True)
class Field:
    """
    One keyword: C{kind} is C{str}, C{float}, C{int}, C{epoch} or C{enum};
    C{units} is the unit text the standard prints for it (or None).
    C{group} names the XML element that holds it inside its section.
    """

    name: str
    kind: str = "str"
    mandatory: bool = False
    units: str | None = None
    enum: tuple[str, ...] = ()
    group: str | None = None


def _f(
    name: str, kind: str = "str", m: bool = False, u: str | None = None, group: str | None = None
) -> Field:
    return Field(name, kind, m, u, (), group)


def _e(name: str, values: tuple[str, ...], m: bool = False) -> Field:
    return Field(name, "enum", m, None, values)


YES_NO = ("YES", "NO")

HEADER: tuple[Field, ...] = (
    _f("CREATION_DATE", "epoch", True),
    _f("ORIGINATOR", "str", True),
    _f("MESSAGE_FOR"),
    _f("MESSAGE_ID", "str", True),
)

RELATIVE_STATE_VECTOR = (
    "RELATIVE_POSITION_R",
    "RELATIVE_POSITION_T",
    "RELATIVE_POSITION_N",
    "RELATIVE_VELOCITY_R",
    "RELATIVE_VELOCITY_T",
    "RELATIVE_VELOCITY_N",
)

RELATIVE: tuple[Field, ...] = (
    _f("TCA", "epoch", True),
    _f("MISS_DISTANCE", "float", True, "m"),
    _f("RELATIVE_SPEED", "float", False, "m/s"),
    *(
        _f(n, "float", False, "m" if "POSITION" in n else "m/s", "relativeStateVector")
        for n in RELATIVE_STATE_VECTOR
    ),
    _f("START_SCREEN_PERIOD", "epoch"),
    _f("STOP_SCREEN_PERIOD", "epoch"),
    _e("SCREEN_VOLUME_FRAME", ("RTN", "TVN")),
    _e("SCREEN_VOLUME_SHAPE", ("ELLIPSOID", "BOX")),
    _f("SCREEN_VOLUME_X", "float", False, "m"),
    _f("SCREEN_VOLUME_Y", "float", False, "m"),
    _f("SCREEN_VOLUME_Z", "float", False, "m"),
    _f("SCREEN_ENTRY_TIME", "epoch"),
    _f("SCREEN_EXIT_TIME", "epoch"),
    _f("COLLISION_PROBABILITY", "float"),
    _f("COLLISION_PROBABILITY_METHOD"),
)

METADATA: tuple[Field, ...] = (
    _e("OBJECT", ("OBJECT1", "OBJECT2"), True),
    _f("OBJECT_DESIGNATOR", "str", True),
    _f("CATALOG_NAME", "str", True),
    _f("OBJECT_NAME", "str", True),
    _f("INTERNATIONAL_DESIGNATOR", "str", True),
    _e("OBJECT_TYPE", ("PAYLOAD", "ROCKET BODY", "DEBRIS", "UNKNOWN", "OTHER")),
    _f("OPERATOR_CONTACT_POSITION"),
    _f("OPERATOR_ORGANIZATION"),
    _f("OPERATOR_PHONE"),
    _f("OPERATOR_EMAIL"),
    _f("EPHEMERIS_NAME", "str", True),
    _e("COVARIANCE_METHOD", ("CALCULATED", "DEFAULT"), True),
    _e("MANEUVERABLE", ("YES", "NO", "N/A"), True),
    _f("ORBIT_CENTER"),
    _e("REF_FRAME", ("GCRF", "EME2000", "ITRF"), True),
    _f("GRAVITY_MODEL"),
    _f("ATMOSPHERIC_MODEL"),
    _f("N_BODY_PERTURBATIONS"),
    _e("SOLAR_RAD_PRESSURE", YES_NO),
    _e("EARTH_TIDES", YES_NO),
    _e("INTRACK_THRUST", YES_NO),
)

_OD = "odParameters"
_ADD = "additionalParameters"
_SV = "stateVector"
_COV = "covarianceMatrix"

_COV_MANDATORY = (
    ("CR_R", "m**2"),
    ("CT_R", "m**2"),
    ("CT_T", "m**2"),
    ("CN_R", "m**2"),
    ("CN_T", "m**2"),
    ("CN_N", "m**2"),
    ("CRDOT_R", "m**2/s"),
    ("CRDOT_T", "m**2/s"),
    ("CRDOT_N", "m**2/s"),
    ("CRDOT_RDOT", "m**2/s**2"),
    ("CTDOT_R", "m**2/s"),
    ("CTDOT_T", "m**2/s"),
    ("CTDOT_N", "m**2/s"),
    ("CTDOT_RDOT", "m**2/s**2"),
    ("CTDOT_TDOT", "m**2/s**2"),
    ("CNDOT_R", "m**2/s"),
    ("CNDOT_T", "m**2/s"),
    ("CNDOT_N", "m**2/s"),
    ("CNDOT_RDOT", "m**2/s**2"),
    ("CNDOT_TDOT", "m**2/s**2"),
    ("CNDOT_NDOT", "m**2/s**2"),
)


def _covOptional() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for prefix, posU, velU, drgU in (
        ("CDRG", "m**3/kg", "m**3/(kg*s)", "m**4/kg**2"),
        ("CSRP", "m**3/kg", "m**3/(kg*s)", "m**4/kg**2"),
        ("CTHR", "m**2/s**2", "m**2/s**3", "m**3/(kg*s**2)"),
    ):
        for axis in ("R", "T", "N"):
            out.append((f"{prefix}_{axis}", posU))
        for axis in ("RDOT", "TDOT", "NDOT"):
            out.append((f"{prefix}_{axis}", velU))
        out.append((f"{prefix}_DRG", drgU))
        if prefix in ("CSRP", "CTHR"):
            out.append((f"{prefix}_SRP", drgU))
        if prefix == "CTHR":
            out.append(("CTHR_THR", "m**2/s**4"))
    return out


DATA: tuple[Field, ...] = (
    _f("TIME_LASTOB_START", "epoch", group=_OD),
    _f("TIME_LASTOB_END", "epoch", group=_OD),
    _f("RECOMMENDED_OD_SPAN", "float", False, "d", _OD),
    _f("ACTUAL_OD_SPAN", "float", False, "d", _OD),
    _f("OBS_AVAILABLE", "int", group=_OD),
    _f("OBS_USED", "int", group=_OD),
    _f("TRACKS_AVAILABLE", "int", group=_OD),
    _f("TRACKS_USED", "int", group=_OD),
    _f("RESIDUALS_ACCEPTED", "float", False, "%", _OD),
    _f("WEIGHTED_RMS", "float", group=_OD),
    _f("AREA_PC", "float", False, "m**2", _ADD),
    _f("AREA_DRG", "float", False, "m**2", _ADD),
    _f("AREA_SRP", "float", False, "m**2", _ADD),
    _f("MASS", "float", False, "kg", _ADD),
    _f("CD_AREA_OVER_MASS", "float", False, "m**2/kg", _ADD),
    _f("CR_AREA_OVER_MASS", "float", False, "m**2/kg", _ADD),
    _f("THRUST_ACCELERATION", "float", False, "m/s**2", _ADD),
    _f("SEDR", "float", False, "W/kg", _ADD),
    _f("X", "float", True, "km", _SV),
    _f("Y", "float", True, "km", _SV),
    _f("Z", "float", True, "km", _SV),
    _f("X_DOT", "float", True, "km/s", _SV),
    _f("Y_DOT", "float", True, "km/s", _SV),
    _f("Z_DOT", "float", True, "km/s", _SV),
    *(_f(n, "float", True, u, _COV) for n, u in _COV_MANDATORY),
    *(_f(n, "float", False, u, _COV) for n, u in _covOptional()),
)

DATA_GROUPS = (_OD, _ADD, _SV, _COV)

HEADER_BY_NAME = {f.name: f for f in HEADER}
RELATIVE_BY_NAME = {f.name: f for f in RELATIVE}
METADATA_BY_NAME = {f.name: f for f in METADATA}
DATA_BY_NAME = {f.name: f for f in DATA}
