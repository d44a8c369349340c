"""Physics of the mock galaxies: constants, mass profiles, scaling relations and the spherical Jeans equation."""

from galmass.physics.constants import G, H_LITTLE, LOG_R_GRID, RADII_FACTORS, RHO_CRIT
from galmass.physics.df import sample_df, sample_tangential_df
from galmass.physics.jeans import JeansSolution, anisotropy, projected_dispersion, solve_jeans
from galmass.physics.profiles import (
    corenfw_mass,
    dc14_mass,
    dc14_shape,
    exponential_disc_mass,
    nfw_mass,
    plummer_density,
    plummer_mass,
    plummer_radius_from_fraction,
    plummer_surface_density,
)
from galmass.physics.scaling import c200_dutton_maccio, r200_from_m200, size_kravtsov, smhm_moster

__all__ = [
    "G",
    "H_LITTLE",
    "LOG_R_GRID",
    "RADII_FACTORS",
    "RHO_CRIT",
    "sample_df",
    "sample_tangential_df",
    "JeansSolution",
    "anisotropy",
    "projected_dispersion",
    "solve_jeans",
    "corenfw_mass",
    "dc14_mass",
    "dc14_shape",
    "exponential_disc_mass",
    "nfw_mass",
    "plummer_density",
    "plummer_mass",
    "plummer_radius_from_fraction",
    "plummer_surface_density",
    "c200_dutton_maccio",
    "r200_from_m200",
    "size_kravtsov",
    "smhm_moster",
]
