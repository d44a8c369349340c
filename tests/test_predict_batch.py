"""galmass predict with many galaxies: the batched checks and realisations equal the per-galaxy ones exactly, and
the terminal gets a summary, not ~12 lines per galaxy."""

from __future__ import annotations

import numpy as np
import pytest

import galmass.pretrained as pretrained
from galmass.catalogue import Catalogue
from galmass.predict import (EXAMPLES, FOOTPRINT_WARN, LISTED, PRINT_GALAXIES, REFUSED_LISTED, REFUSED_NAMED, Target,
                             _unit_realisations, assess, assess_many, main, observe_catalogue, realisations)

pytestmark = pytest.mark.skipif(not pretrained.available(), reason="no pretrained model shipped in this checkout")


@pytest.fixture(scope="module")
def blob() -> dict:
    """The shipped model's file metadata: its data_config (membership clip 3, recentring) and normalisation."""
    return pretrained.load_default()[2]


def _catalogue(rng: np.random.Generator, name: str, n: int, uncertain: bool = False) -> Catalogue:
    """A Plummer dwarf of n stars (R_h 0.2-0.5 kpc, σ 6-12 km/s) slightly off its origin, ~8 % foreground stars,
    errors 0.5-10 km/s varying per star; ``uncertain``: membership probabilities and a distance error."""
    rh, sigma = rng.uniform(0.2, 0.5), rng.uniform(6, 12)
    u = rng.uniform(0.01, 0.99, n)
    radius, phi = rh * np.sqrt(u / (1 - u)), rng.uniform(0, 2 * np.pi, n)
    x, y = radius * np.cos(phi) + 0.03 * rh, radius * np.sin(phi) - 0.02 * rh
    err = 10 ** rng.uniform(-0.3, 1.0, n)
    v = 100.0 + rng.normal(0, sigma, n) + rng.normal(0, 1, n) * err
    fg = rng.random(n) < 0.08
    v[fg] = rng.normal(100, 80, fg.sum())
    p = np.where(rng.random(n) < 0.3, rng.uniform(0.2, 0.95, n), 1.0) if uncertain else np.ones(n)
    return Catalogue(name, x, y, v, err, p, distance_kpc=80.0, distance_err_kpc=6.0 if uncertain else 0.0)


def _assert_same_inputs(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for key, want in expected.items():
        if isinstance(want, np.ndarray):
            assert got[key].dtype == want.dtype and np.array_equal(got[key], want), key
        else:
            assert type(got[key]) is type(want) and got[key] == want, key


@pytest.mark.parametrize("observer", ["shipped", "no clip, no recentring", "with gas"])
def test_assess_many_equals_assess_one_by_one(blob, observer):
    """Mixed star counts (a few too small, one non-finite), some galaxies with gas (observed one by one): the same
    nominal inputs, warnings and errors."""
    if observer == "no clip, no recentring":
        blob = {**blob, "data_config": {**blob["data_config"], "membership_clip": 0.0, "recentre": False}}
    rng = np.random.default_rng(5)
    cats = [_catalogue(rng, f"g{i}", n) for i, n in enumerate([6, 15, 40, 40, 40, 40, 100, 100, 100, 100, 100, 257,
                                                                257, 257, 257, 100, 40, 3100])]
    cats[3].x_kpc[7] = np.nan  # refused by observation_to_sample: its message becomes the galaxy's error
    cats[5].p_member[:10] = 0.3  # unlikely members are left out of the nominal inputs
    need_gas = observer == "with gas"
    gas = [_catalogue(rng, c.name, 300) if need_gas and i % 2 else None for i, c in enumerate(cats)]
    for g in gas:
        if g is not None:
            g.mass = rng.uniform(1e3, 1e4, g.v_kms.size)
    galaxies = list(zip(cats, gas))
    expected = [assess(c, g, blob, need_gas=need_gas) for c, g in galaxies]
    for got, want in zip(assess_many(galaxies, blob, need_gas=need_gas), expected):
        assert got.cat is want.cat and got.warnings == want.warnings and got.errors == want.errors
        _assert_same_inputs(got.nominal, want.nominal)
    assert any(t.errors for t in expected) and any(not t.errors for t in expected)


def test_realisations_observed_together_equal_one_by_one(blob):
    """Distance and membership draws: the same inputs as observing each draw on its own, for one galaxy and for a
    unit of galaxies observed together."""
    dc, k = blob["data_config"], 16
    rng = np.random.default_rng(9)
    targets = [assess(_catalogue(rng, f"u{i}", n, uncertain=i != 2), None, blob, need_gas=False)
               for i, n in enumerate([60, 100, 100, 150])]
    expected = []
    for i, t in enumerate(targets):  # the draws one at a time, as predict made them before batching
        draw_rng, cat = np.random.default_rng([0, i]), t.cat
        if not (cat.distance_err_kpc > 0 or np.any((cat.p_member > 0) & (cat.p_member < 1))):
            expected.append([t.nominal])
            continue
        one = []
        for _ in range(k):
            scale = max(draw_rng.normal(cat.distance_kpc, cat.distance_err_kpc), 0.5 * cat.distance_kpc) / 80.0
            keep = draw_rng.random(cat.v_kms.size) < cat.p_member
            if np.count_nonzero(keep) < 10:
                keep = cat.p_member >= 0.5
            one.append(observe_catalogue(cat, None, dc, keep, scale))
        expected.append(one)
    args = type("Args", (), {"realisations": k, "seed": 0})()
    together = _unit_realisations(list(enumerate(targets)), dc, args)
    alone = [realisations(t, dc, k, np.random.default_rng([0, i])) for i, t in enumerate(targets)]
    for want, got_unit, got_alone in zip(expected, together, alone):
        assert len(want) == len(got_unit) == len(got_alone)
        for w, a, b in zip(want, got_unit, got_alone):
            _assert_same_inputs(a, w)
            _assert_same_inputs(b, w)
    assert [len(r) for r in expected] == [k, k, 1, k]


def _write_table(path, names: list[str], n_stars: dict[str, int] | None = None) -> None:
    rng = np.random.default_rng(1)
    rows = ["galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms"]
    for name in names:
        c = _catalogue(rng, name, (n_stars or {}).get(name, 80))
        rows += [f"{name},{a:.5f},{b:.5f},{v:.3f},{e:.3f}"
                 for a, b, v, e in zip(c.x_kpc, c.y_kpc, c.v_kms, c.v_err_kms)]
    path.write_text("\n".join(rows) + "\n")


def test_predict_prints_a_summary_for_many_galaxies_and_every_profile_for_a_few(tmp_path, capsys):
    """PRINT_GALAXIES + 2 galaxies: a few lines (count, examples, files, flagged galaxies); 2 galaxies: each one's
    profile at every radius, as before."""
    many = [f"dwarf{i:02d}" for i in range(PRINT_GALAXIES + 2)]
    _write_table(tmp_path / "many.csv", many)
    common = ["--samples", "20", "--no-plot", "--force", "--seed", "1"]
    assert main(["--stars", str(tmp_path / "many.csv"), "--out", str(tmp_path / "many"), *common]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == EXAMPLES + 2 and lines[0].startswith(f"[galmass] {len(many)} galaxies")
    assert [ln.split(":")[0].strip() for ln in lines[1:-1]] == many[:EXAMPLES]
    assert "summary.csv" in lines[0] and lines[-1].startswith("[galmass] wrote") and "M(<1.0 R_h)" in lines[1]
    assert len(err.splitlines()) <= LISTED + 1
    if err:
        assert "galaxies have warnings or notes" in err.splitlines()[0]

    _write_table(tmp_path / "few.csv", many[:2])
    assert main(["--stars", str(tmp_path / "few.csv"), "--out", str(tmp_path / "few"), *common]) == 0
    out, _ = capsys.readouterr()
    assert out.count("[galmass] dwarf") == 2 and out.count("   M(<") == 2 * 10  # each galaxy, every radius


def test_a_refusal_of_many_galaxies_lists_the_first_and_counts_the_rest(tmp_path, capsys):
    """REFUSED_LISTED + REFUSED_NAMED + 3 galaxies too small to predict and 2 good ones: the first REFUSED_LISTED
    with their problem, one count per kind of problem, REFUSED_NAMED more names and how many are left unnamed;
    nothing written. A few failing galaxies are each listed in full."""
    small = [f"tiny{i:03d}" for i in range(REFUSED_LISTED + REFUSED_NAMED + 3)]
    _write_table(tmp_path / "many.csv", ["good0", *small, "good1"], {name: 5 for name in small})
    out = tmp_path / "out"
    assert main(["--stars", str(tmp_path / "many.csv"), "--out", str(out), "--samples", "20", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    lines = err.splitlines()
    listed = [ln.split(":")[0].strip() for ln in lines[1:REFUSED_LISTED + 1]]
    assert listed == small[:REFUSED_LISTED] and "only 5 member stars" in lines[1]
    assert f"{len(small)} of {len(small) + 2} galaxies cannot be predicted" in err
    assert f"    {len(small)} × only # member stars: at least # are needed for a dispersion" in lines
    named = next(ln for ln in lines if ln.startswith(f"  the other {len(small) - REFUSED_LISTED}: "))
    assert small[REFUSED_LISTED] in named and small[REFUSED_LISTED + REFUSED_NAMED - 1] in named
    assert small[-1] not in named and named.endswith(" and 3 more")
    assert len(lines) < REFUSED_LISTED + 8

    _write_table(tmp_path / "few.csv", ["good0", *small[:3]], {name: 5 for name in small})
    assert main(["--stars", str(tmp_path / "few.csv"), "--out", str(out), "--samples", "20", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert [ln.split(":")[0].strip() for ln in err.splitlines()[1:4]] == small[:3]
    assert "cannot be predicted" not in err and not out.exists()


def test_members_far_beyond_the_training_footprint_warn(blob):
    """Three members moved beyond twice the widest training footprint (in R_h, before clipping by position, which the
    observer does not do): a warning naming how many and the outermost; the same catalogue without them: none."""
    rng = np.random.default_rng(3)
    cat = _catalogue(rng, "wide", 300)
    assert not any("footprint" in w for w in assess(cat, None, blob, need_gas=False).warnings)
    widest = blob["data_config"]["selection_fov_rh"][1]
    rh = float(np.median(np.hypot(cat.x_kpc, cat.y_kpc)))
    cat.x_kpc[:3] = rh * FOOTPRINT_WARN * widest * np.array([1.2, 1.5, 3.0])
    cat.v_kms[:3] = np.median(cat.v_kms)  # kept by the velocity clip
    warnings = [w for w in assess(cat, None, blob, need_gas=False).warnings if "footprint" in w]
    assert len(warnings) == 1 and warnings[0].startswith(f"3 member stars lie beyond {FOOTPRINT_WARN * widest:g} R_h")
