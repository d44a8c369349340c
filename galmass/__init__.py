"""galmass: dark-matter + baryon mass profiles of galaxies from line-of-sight kinematics.

Science code lives here; cluster mechanics live in the sibling package ``hpc`` (which never imports galmass).
"""

__version__ = "0.1.0"
