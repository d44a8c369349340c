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


PLAIN = "galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms\n" + "".join(
    f"{g},{0.01 * i - 0.3:.5f},{0.3 - 0.007 * i:.4f},{(-1) ** i * 0.37 * i:.3f},{1 + i % 4}\n"
    for g, n in (("A", 25), ("B", 30)) for i in range(n))


@pytest.mark.parametrize("text, plain", [
    (PLAIN, True),
    (PLAIN.rstrip("\n"), True),  # no final line break
    ("v_err_kms,v_los_kms,y_kpc,x_kpc,galaxy\n2,1e-3,+5,.5,A\n2.,-0,1_000,0.25,A\n1,3,4,5,B\n", True),  # order, forms
    (PLAIN.replace(",", ", "), False),  # spaces after commas
    (PLAIN.replace("\n", "\r\n").replace("\r\n", "\r", 3), True),  # Windows/old Mac line breaks (read as "\n")
    (PLAIN.replace("\n", "\x0c\n", 2), False),  # a form feed: whitespace, and a line break to str.splitlines
    ("# a comment\n" + PLAIN + "\n\n", False),  # comment and blank lines
    (PLAIN.replace("A,", '"A",'), False),  # quoted names
    ("galaxy,x_kpc,y_kpc,v_los_kms\nBoötes,0.1,0.2,3\nBoötes,0.2,0.1,4\n", False),  # not ASCII
    ("galaxy,x_kpc,y_kpc,v_los_kms\nN#1,0.1,0.2,3\n", False),  # a '#' inside a name
    (PLAIN.replace("0.35", "abc", 1), None),  # not a number: the csv path's error
    (PLAIN.replace("1.11", "nan", 1), None),  # non-finite
    (PLAIN.replace("\nB,", "\nB,,", 1), None),  # a line with a field too many
    (PLAIN.replace("\nB,", "\nB,,", 1).replace(",1\n", "\n", 1), None),  # one too many, one too few
    (PLAIN.replace("v_err_kms", "verr"), None),  # unknown column
    (PLAIN.replace("v_err_kms", "x_kpc"), None),  # a column twice
    ("x_kpc,y_kpc,v_los_kms\n", None),  # no rows
    ("x_kpc,y_kpc,v_los_kms\n0.1,,3\n", None),  # an empty field
])
def test_plain_tables_are_read_exactly_as_the_csv_module_reads_them(tmp_path, monkeypatch, text, plain):
    """The quick reader of plain tables gives the same catalogues (numbers bit for bit) or the same error as the
    csv module's reader; anything not plain is left to the latter."""
    import galmass.catalogue as catalogue

    path = tmp_path / "cat.csv"
    path.write_text(text, encoding="utf-8")
    if plain is not None:
        assert (catalogue._plain_table(path.read_text()) is not None) == plain

    def read():
        try:
            return read_catalogues(path)
        except CatalogueError as err:
            return str(err)

    quick = read()
    monkeypatch.setattr(catalogue, "_plain_table", lambda text: None)
    slow = read()
    assert type(quick) is type(slow)
    if isinstance(slow, str):
        assert plain is None and quick == slow
        return
    assert list(quick) == list(slow)
    for name in slow:
        a, b = quick[name], slow[name]
        for field in ("x_kpc", "y_kpc", "v_kms", "v_err_kms", "p_member"):
            assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), (name, field)
        assert (a.name, a.distance_kpc, a.distance_err_kpc, a.notes) == (b.name, b.distance_kpc, b.distance_err_kpc,
                                                                        b.notes)
