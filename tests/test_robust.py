"""pipeline.vectors.robust: GEOS operations that survive what the 25 km² town met."""

from __future__ import annotations

import numpy as np
import shapely

from pipeline.vectors.finish import output_lonlat
from pipeline.vectors.robust import snap

# a squared building of the 25 km² sample town (EPSG:3857) whose outline, rounded to 7 decimals
# of a degree, folds into a bow tie that GEOS cannot snap as it is (TopologyException: side
# location conflict)
WKT = (
    "POLYGON ((3626421.0421906896 37439.811916932464, 3626421.34077283 37446.380724050105, "
    "3626425.5209228136 37445.78355976939, 3626426.4166692384 37444.88781334087, "
    "3626427.013833523 37442.20057406649, 3626427.6109978072 37435.63176694885, "
    "3626428.2081620917 37434.736020524055, 3626428.506744232 37432.645945530385, "
    "3626428.506744232 37427.570049121976, 3626429.1039085165 37426.3757205531, "
    "3626427.6810571323 37414.99290956583, 3626426.5469631646 37415.063515703136, "
    "3626426.7152513824 37414.432434886694, 3626425.5209228136 37418.911167010665, "
    "3626425.5209228136 37423.09131699428, 3626424.923758529 37423.38989913836, "
    "3626424.923758529 37424.88280984759, 3626424.3265942484 37425.77855627239, "
    "3626424.3265942484 37430.55587054044, 3626424.0280121043 37432.34736339003, "
    "3626423.4308478236 37432.34736339003, 3626423.1322656795 37432.94452767447, "
    "3626423.1322656795 37435.63176694885, 3626419.2506978363 37435.33318480849, "
    "3626418.3549514115 37435.930349089205, 3626418.3549514115 37437.42325980214, "
    "3626421.0421906896 37439.811916932464))"
)
FOLDS = shapely.from_wkt(WKT)
# the same outline in EPSG:4326 as rounded
LONLAT = (
    "POLYGON ((32.5766945 0.3363256, 32.5766972 0.3363846, 32.5767347 0.3363793, "
    "32.5767428 0.3363712, 32.5767481 0.3363471, 32.5767535 0.3362881, 32.5767589 0.33628, "
    "32.5767615 0.3362612, 32.5767615 0.3362157, 32.5767669 0.3362049, 32.5767541 0.3361027, "
    "32.5767439 0.3361033, 32.5767455 0.3360976, 32.5767347 0.3361379, 32.5767347 0.3361754, "
    "32.5767294 0.3361781, 32.5767294 0.3361915, 32.576724 0.3361996, 32.576724 0.3362425, "
    "32.5767213 0.3362586, 32.5767159 0.3362586, 32.5767133 0.3362639, 32.5767133 0.3362881, "
    "32.5766784 0.3362854, 32.5766703 0.3362908, 32.5766703 0.3363042, 32.5766945 0.3363256))"
)


def test_a_polygon_that_rounding_folds_is_snapped_valid() -> None:
    ll = shapely.transform(shapely.from_wkt(LONLAT), lambda c: np.round(c, 7))
    assert not ll.is_valid
    try:
        shapely.set_precision(ll, 1e-7)
        raised = False
    except shapely.errors.GEOSException:
        raised = True
    assert raised  # what the Vectorize task failed on
    out = snap(np.array([ll, shapely.box(0, 0, 1, 1)], dtype=object), 1e-7)
    assert all(shapely.is_valid(out)) and abs(out[0].area - ll.buffer(0).area) < 0.01 * ll.buffer(0).area
    assert shapely.equals(out[1], shapely.box(0, 0, 1, 1))


def test_output_lonlat_of_that_building() -> None:
    ll = output_lonlat(np.array([FOLDS], dtype=object))
    assert shapely.is_valid(ll[0]) and not ll[0].is_empty
