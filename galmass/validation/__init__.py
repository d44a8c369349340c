"""Independent validation of trained runs on galaxies made by a different generator (galpy distribution functions).

``galmass.validation.generator`` makes and caches the set; ``galmass.validation.report`` turns posterior samples of
any estimator into metrics on it; ``galmass.validate`` (``galmass validate RUN``) grades a trained run.
"""

from galmass.validation.generator import (
    GENERATOR_VERSION,
    TRUTH_R_KPC,
    Catalogue,
    GalaxyParams,
    SetSpec,
    ValidationSet,
    default_set_path,
    generate_set,
    get_set,
    load_set,
    save_set,
)
from galmass.validation.report import evaluate_sampler, observe_set, render_markdown, score

__all__ = ["GENERATOR_VERSION", "TRUTH_R_KPC", "Catalogue", "GalaxyParams", "SetSpec", "ValidationSet",
           "default_set_path", "generate_set", "get_set", "load_set", "save_set", "evaluate_sampler", "observe_set",
           "render_markdown", "score"]
