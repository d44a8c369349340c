"""Mock galaxy suites: recipes (suites, feedback models), galaxies and their particles, projections, observations."""

from galmass.mocks.galaxy import PARAM_NAMES, Galaxy, draw_galaxy, sample_gas, sample_stars
from galmass.mocks.observe import observe_galaxy
from galmass.mocks.projection import fibonacci_los, project, projection_basis
from galmass.mocks.suites import FeedbackSpec, SuiteSpec, load_feedback, load_suite

__all__ = [
    "PARAM_NAMES",
    "Galaxy",
    "draw_galaxy",
    "sample_gas",
    "sample_stars",
    "observe_galaxy",
    "fibonacci_los",
    "project",
    "projection_basis",
    "FeedbackSpec",
    "SuiteSpec",
    "load_feedback",
    "load_suite",
]
