"""Reading observed catalogues (units in column names, sky projection, many galaxies) and the joint range check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from galmass.catalogue import CatalogueError, read_catalogues, tangent_plane_kpc
from galmass.datasets.schema import SCALAR_NAMES
from galmass.predict import joint_distance


def test_tangent_plane_is_exact_on_great_circles():
    """Along the meridian and the equator through the centre the gnomonic distance is D tan(angle)."""
    ang = np.array([0.01, 0.5, 3.0, 20.0])
    x, y = tangent_plane_kpc(np.full(4, 30.0), -10.0 + ang, 30.0, -10.0, 100.0)
    np.testing.assert_allclose(y, 100.0 * np.tan(np.radians(ang)), rtol=1e-9)
    np.testing.assert_allclose(x, 0.0, atol=1e-12)
    x, y = tangent_plane_kpc(359.5 + ang, np.zeros(4), 359.5, 0.0, 100.0)  # across RA = 0/360
    np.testing.assert_allclose(x, 100.0 * np.tan(np.radians(ang)), rtol=1e-9)


def test_many_galaxies_sky_positions_and_errors(tmp_path):
    path = tmp_path / "field.csv"
    rows = ["galaxy,ra_deg,dec_deg,v_los_kms,distance_kpc"]
    rows += [f"A,{359.99 + 0.001 * i},{-30 + 0.001 * i},{i},80" for i in range(20)]  # straddles RA = 0
    rows += [f"B,{10 + 0.001 * i},{5 + 0.002 * i},{-i},150" for i in range(15)]
    path.write_text("\n".join(rows) + "\n")
    cats = read_catalogues(path)
    assert list(cats) == ["A", "B"] and cats["A"].distance_kpc == 80.0 and len(cats["B"].v_kms) == 15
    assert np.ptp(cats["A"].x_kpc) < 0.1  # a field across RA = 0 is not torn apart
    assert any("v_err_kms" in n for n in cats["A"].notes)

    path.write_text("ra_deg,dec_deg,v_los_kms\n10,5,3\n10.01,5,4\n")
    with pytest.raises(CatalogueError, match="need a distance"):
        read_catalogues(path)
    path.write_text("galaxy,x_kpc,y_kpc,v_los_kms,distance_kpc\nA,0,0,1,80\nA,1,1,2,90\n")
    with pytest.raises(CatalogueError, match="'distance_kpc' must be constant within a galaxy"):
        read_catalogues(path)
    path.write_text("x_kpc,y_kpc,v_los_kms\n0,0,abc\n")
    with pytest.raises(CatalogueError, match=r"column 'v_los_kms' row 1: 'abc' is not a number"):
        read_catalogues(path)
    path.write_text("x_kpc,y_kpc,vlos\n0,0,1\n")
    with pytest.raises(CatalogueError, match=r"unknown column\(s\) \['vlos'\]"):
        read_catalogues(path)


def test_joint_distance_is_the_mahalanobis_distance():
    """A galaxy inside both marginal ranges but off the σ★–R_h relation is far from the training set."""
    i, j = SCALAR_NAMES.index("log10_rh_kpc"), SCALAR_NAMES.index("log10_sigma_stars_kms")
    n = len(SCALAR_NAMES)
    std = np.full(n, 0.3)
    corr = np.eye(n)
    corr[i, j] = corr[j, i] = 0.95
    norm = {"scalars": {"mean": [0.0] * n, "std": std.tolist(), "corr": corr.tolist()}}
    on, off = np.zeros(n), np.zeros(n)
    on[[i, j]] = 0.3, 0.3
    off[[i, j]] = 0.3, -0.3
    cov = np.array([[1, 0.95], [0.95, 1]]) * 0.09
    assert joint_distance(on, norm) == pytest.approx(mahalanobis([0.3, 0.3], [0, 0], np.linalg.inv(cov)))
    assert joint_distance(off, norm) > 6 > joint_distance(on, norm)
    assert joint_distance(on, {"scalars": {"mean": [0.0] * n, "std": std.tolist()}}) is None
