"""Sky-plane augmentation: random symmetries of the square (90° rotations and flips) plus optional noise.

Why these: the line of sight fixes only the image plane, not its orientation, so the 8 symmetries of a square
pixel grid (the dihedral group D4: 4 rotations × optional mirror) give equally valid observations. They are exact
on a square grid (pixels are permuted, never interpolated). All sky maps of one sample (stars and gas) get the same
symmetry, because they are images of the same galaxy from the same direction. Phase-space maps (R/R_h vs v_los)
are not images of the sky and are left untouched; v_los itself does not change sign under a rotation or mirror of
the sky plane, so no channel needs a sign flip.

D4 is generated here as ``transpose?`` (swap the two pixel axes) followed by ``flip_w?`` and ``flip_h?``; the 2³
combinations are exactly the 8 symmetries (e.g. a 90° rotation is a transpose followed by one flip).

Randomness is a pure function of ``(seed, epoch, step, position in the global batch)``: the same sample gets the same
augmentation for any number of ranks, in the torch and in the DALI path, and after a mid-epoch resume.

Noise: value channels (all but the last, which is the mask) get ``noise × rms_c × N(0, 1) × mask`` added, with
``rms_c`` the root mean square of channel ``c`` of that map: relative, because channels carry different units
(weight fraction, km/s); multiplied by the mask so that pixels without tracers stay empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["draw_symmetries", "noise_for_sample", "target_noise", "hide_mask", "apply_numpy", "symmetry_numpy"]

_TAG_SYMMETRY = 0x5157  # separate the streams of symmetries and noise drawn from one (seed, epoch, step)
_TAG_NOISE = 0x4E53
_TAG_TARGET = 0x5447
_TAG_HIDE = 0x4844


def draw_symmetries(seed: int, epoch: int, step: int, global_batch: int) -> np.ndarray:
    """Symmetry flags ``[global_batch, 3]`` (uint8: transpose, flip W, flip H) of one global batch.

    Drawn for the whole global batch so that rank ``r`` of ``W`` takes rows ``r*B/W … (r+1)*B/W`` and sees the
    flags a 1-rank run gives the same samples.
    """
    if min(seed, epoch, step) < 0 or global_batch < 1:
        raise ValueError(f"seed, epoch, step must be >= 0 and global_batch >= 1, got {seed}, {epoch}, {step}, "
                         f"{global_batch}.")
    rng = np.random.default_rng([seed, epoch, step, _TAG_SYMMETRY])
    return rng.integers(0, 2, size=(global_batch, 3), dtype=np.uint8)


def noise_for_sample(seed: int, epoch: int, step: int, position: int, shapes: Sequence[tuple[int, ...]]
                     ) -> list[np.ndarray]:
    """Standard-normal fields (float32) for the sky maps of the sample at ``position`` of the global batch."""
    rng = np.random.default_rng([seed, epoch, step, position, _TAG_NOISE])
    return [rng.standard_normal(size=s, dtype=np.float32) for s in shapes]


def target_noise(seed: int, epoch: int, step: int, global_batch: int, dim: int) -> np.ndarray:
    """Standard-normal jitter ``[global_batch, dim]`` (float32) for the training targets of one global batch.

    A function of (seed, epoch, step) only, drawn for the whole global batch, so every rank count and both
    loaders add the same jitter to the same sample, and a resumed run adds what an uninterrupted one does.
    """
    rng = np.random.default_rng([seed, epoch, step, _TAG_TARGET])
    return rng.standard_normal(size=(global_batch, dim), dtype=np.float32)


def hide_mask(seed: int, epoch: int, step: int, global_batch: int, dim: int, rate: float) -> np.ndarray:
    """Which entries ``[global_batch, dim]`` (bool) of a conditioning input to hide in one global batch, each with
    probability ``rate`` (conditional dropout: one network learns the posterior with and without the input).

    Like :func:`target_noise`, a function of (seed, epoch, step) only: the same for every rank count and loader,
    and on resume.
    """
    rng = np.random.default_rng([seed, epoch, step, _TAG_HIDE])
    return rng.random(size=(global_batch, dim)) < rate


def symmetry_numpy(x: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Apply per-sample symmetry ``flags [b, 3]`` to maps ``x [b, C, H, W]`` (H == W); returns a new array."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"sky maps must be [b, C, N, N], got shape {x.shape}. HINT: rotations need square maps.")
    out = np.empty_like(x)
    for i, (t, fw, fh) in enumerate(np.asarray(flags, dtype=bool)):
        y = x[i].swapaxes(-1, -2) if t else x[i]
        if fw:
            y = y[..., ::-1]
        if fh:
            y = y[..., ::-1, :]
        out[i] = y
    return out


def _add_noise(x: np.ndarray, noise: np.ndarray, scale: float) -> np.ndarray:
    """``x [b, C, H, W]`` plus relative noise on the value channels, masked by the last channel (float32)."""
    x = x.astype(np.float32)
    rms = np.sqrt(np.mean(np.square(x), axis=(2, 3), keepdims=True))
    weight = np.ones((1, x.shape[1], 1, 1), dtype=np.float32)
    weight[:, -1] = 0.0  # the mask channel is not a measurement
    return x + np.float32(scale) * rms * weight * x[:, -1:] * noise


def apply_numpy(batch: dict[str, np.ndarray], sky_keys: Sequence[str], flags: np.ndarray, noise_scale: float,
                noises: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Reference (CPU) augmentation of one rank's batch; the DALI pipeline applies the same operations.

    Parameters
    ----------
    batch : dict of arrays
        Rank batch; ``sky_keys`` entries are ``[b, C, N, N]``.
    sky_keys : sequence of str
        Which entries are sky maps (augmented); others (phase maps, scalars, labels) pass through.
    flags : array [b, 3]
        From :func:`draw_symmetries`, this rank's rows.
    noise_scale : float
        Relative noise amplitude (0: none).
    noises : dict or None
        ``key -> [b, C, N, N]`` standard-normal fields (from :func:`noise_for_sample`); needed if noise_scale > 0.
    """
    out = dict(batch)
    for key in sky_keys:
        y = symmetry_numpy(batch[key], flags)
        if noise_scale > 0:
            if noises is None:
                raise ValueError("noise_scale > 0 needs noise fields. HINT: pass noises from noise_for_sample().")
            y = _add_noise(y, noises[key], noise_scale)
        out[key] = y
    return out
