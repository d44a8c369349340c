"""Neural posterior estimators: CNN map encoders + zuko conditional flow."""

from galmass.models.encoder import MapEncoder
from galmass.models.network import MassPosterior

__all__ = ["MapEncoder", "MassPosterior"]
