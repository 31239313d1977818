"""
A complete, valid example CDM, used by the demo, tests and the benchmark.
"""

from __future__ import annotations

import time

from suite.spacecomms.cdm.model import CDM, Segment

__all__ = ["sampleCDM", "isoTime"]


def isoTime(seconds: float) -> str:
    """
    CCSDS calendar time text (UTC, millisecond precision) for a POSIX time.
    """
    whole = int(seconds)
    ms = int(round((seconds - whole) * 1000))
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}"


def _segment(obj: str, designator: str, name: str, sign: float) -> Segment:
    cov = {
        "CR_R": 4.142e1,
        "CT_R": -8.579,
        "CT_T": 2.533e3,
        "CN_R": -2.313e1,
        "CN_T": 1.336e1,
        "CN_N": 7.098e1,
        "CRDOT_R": 2.52e-3,
        "CRDOT_T": -5.476,
        "CRDOT_N": 8.626e-4,
        "CRDOT_RDOT": 5.744e-3,
        "CTDOT_R": -1.006e-2,
        "CTDOT_T": 4.041e-3,
        "CTDOT_N": -1.359e-3,
        "CTDOT_RDOT": -1.502e-5,
        "CTDOT_TDOT": 1.049e-5,
        "CNDOT_R": 1.053e-3,
        "CNDOT_T": -3.412e-3,
        "CNDOT_N": 1.213e-2,
        "CNDOT_RDOT": -3.004e-6,
        "CNDOT_TDOT": -1.091e-6,
        "CNDOT_NDOT": 5.529e-5,
    }
    data = {
        "TIME_LASTOB_START": "2010-03-12T02:14:12.746",
        "TIME_LASTOB_END": "2010-03-12T02:14:12.746",
        "RECOMMENDED_OD_SPAN": 7.88,
        "ACTUAL_OD_SPAN": 5.5,
        "OBS_AVAILABLE": 592,
        "OBS_USED": 579,
        "RESIDUALS_ACCEPTED": 97.8,
        "WEIGHTED_RMS": 0.864,
        "AREA_PC": 5.2,
        "MASS": 251.6,
        "CD_AREA_OVER_MASS": 0.045663,
        "CR_AREA_OVER_MASS": 0.0,
        "X": 2570.097065 * sign,
        "Y": 2244.654904,
        "Z": 6281.497978,
        "X_DOT": 4.418769571,
        "Y_DOT": 4.833547743 * sign,
        "Z_DOT": -3.526774282,
        **cov,
    }
    return Segment(
        metadata={
            "OBJECT": obj,
            "OBJECT_DESIGNATOR": designator,
            "CATALOG_NAME": "SATCAT",
            "OBJECT_NAME": name,
            "INTERNATIONAL_DESIGNATOR": "1997-030E" if obj == "OBJECT1" else "1957-001A",
            "OBJECT_TYPE": "PAYLOAD" if obj == "OBJECT1" else "DEBRIS",
            "OPERATOR_ORGANIZATION": "EXAMPLE OPS",
            "EPHEMERIS_NAME": "EPHEMERIS SATELLITE A" if obj == "OBJECT1" else "NONE",
            "COVARIANCE_METHOD": "CALCULATED",
            "MANEUVERABLE": "YES" if obj == "OBJECT1" else "N/A",
            "REF_FRAME": "EME2000",
            "GRAVITY_MODEL": "EGM-96: 36D 36O",
            "ATMOSPHERIC_MODEL": "JACCHIA 70 DCA",
            "N_BODY_PERTURBATIONS": "MOON, SUN",
            "SOLAR_RAD_PRESSURE": "NO",
            "EARTH_TIDES": "NO",
            "INTRACK_THRUST": "NO",
        },
        data=data,
        metadataComments=[],
        dataComments=[f"{obj} state and covariance"],
    )


def sampleCDM(
    messageId: str = "201113719185",
    tca: float | None = None,
    created: float | None = None,
    object1: str = "12345",
    object2: str = "30337",
    originator: str = "JSPOC",
    missDistance: float = 715.0,
) -> CDM:
    """
    A complete CDM with every mandatory field and many optional ones.
    """
    now = time.time()
    created = now if created is None else created
    tca = now + 3 * 86400 if tca is None else tca
    return CDM(
        version="1.0",
        header={
            "CREATION_DATE": isoTime(created),
            "ORIGINATOR": originator,
            "MESSAGE_FOR": "SATELLITE A",
            "MESSAGE_ID": messageId,
        },
        relative={
            "TCA": isoTime(tca),
            "MISS_DISTANCE": missDistance,
            "RELATIVE_SPEED": 14762.0,
            "RELATIVE_POSITION_R": 27.4,
            "RELATIVE_POSITION_T": -70.2,
            "RELATIVE_POSITION_N": 711.8,
            "RELATIVE_VELOCITY_R": -7.2,
            "RELATIVE_VELOCITY_T": -14692.0,
            "RELATIVE_VELOCITY_N": -1437.2,
            "START_SCREEN_PERIOD": isoTime(created),
            "STOP_SCREEN_PERIOD": isoTime(created + 7 * 86400),
            "SCREEN_VOLUME_FRAME": "RTN",
            "SCREEN_VOLUME_SHAPE": "ELLIPSOID",
            "SCREEN_VOLUME_X": 200.0,
            "SCREEN_VOLUME_Y": 1000.0,
            "SCREEN_VOLUME_Z": 1000.0,
            "SCREEN_ENTRY_TIME": isoTime(tca - 2),
            "SCREEN_EXIT_TIME": isoTime(tca + 2),
            "COLLISION_PROBABILITY": 4.835e-05,
            "COLLISION_PROBABILITY_METHOD": "FOSTER-1992",
        },
        segments=[
            _segment("OBJECT1", object1, "SATELLITE A", 1.0),
            _segment("OBJECT2", object2, "FENGYUN 1C DEB", -1.0),
        ],
        headerComments=["Relative metadata and data follow"],
        relativeComments=[],
    )
