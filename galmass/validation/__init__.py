"""Independent validation of trained runs on galaxies made by a different generator (galpy distribution functions).

``galmass.validation.generator`` makes and caches the sets (the default one and the sealed one, :data:`SEALED`);
``galmass.validation.report`` turns posterior samples of any estimator into metrics on them; ``galmass.validate``
(``galmass validate RUN [--set-name sealed]``) grades a trained run.
"""

from galmass.validation.generator import (
    GENERATOR_VERSION,
    NAMED_SETS,
    SEALED,
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

__all__ = ["GENERATOR_VERSION", "NAMED_SETS", "SEALED", "TRUTH_R_KPC", "Catalogue", "GalaxyParams", "SetSpec",
           "ValidationSet", "default_set_path", "generate_set", "get_set", "load_set", "save_set", "evaluate_sampler",
           "observe_set", "render_markdown", "score"]
