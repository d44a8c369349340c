"""galmass: mass profiles of dispersion-supported galaxies from line-of-sight kinematics (CNN + normalising flow)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = {}
exec((HERE / "galmass" / "__init__.py").read_text(), version)

setup(
    name="galmass",
    version=version["__version__"],
    description="Probabilistic CNN mass profiles of galaxies from stellar and gas kinematics, at HPC scale",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["galmass", "galmass.*", "hpc", "hpc.*"]),
    # The shipped pretrained models (weights + model cards, a few MB) travel inside the package.
    package_data={"galmass.pretrained": ["*.pt", "*.card.json"]},
    # The range admits the CPU wheel 2.13.0 that CI installs first and the CUDA builds clusters bring;
    # installing torch before galmass keeps pip from pulling a multi-GB CUDA build on CPU machines.
    install_requires=[
        "torch>=2.3,<2.15",
        "numpy>=1.26",
        "scipy>=1.11",
        "h5py>=3.10",
        "hdf5plugin>=4.4",
        "zuko>=1.1,<2",
        "pyyaml>=6.0",
        "matplotlib>=3.8",
        "tensorboard>=2.15",
        "tqdm>=4.66",
        # Equilibrium distribution functions (the check of the Jeans velocities); manylinux wheels on PyPI.
        "galpy>=1.12",  # EinastoPotential (the sealed validation set)
    ],
    extras_require={
        "mpi": ["mpi4py>=4.0", "mpich>=4.2"],
        "dali": ["nvidia-dali-cuda120>=1.40"],
        "slurm": ["submitit>=1.5"],
        # galpy's constantbetadf (any constant beta) needs jax; galmass's beta = -1/2 DF does not.
        "df": ["jax>=0.4"],
        # The NPE peer benchmark (benchmarks/npe_peer.py): sbi's masked autoregressive flow on summary statistics.
        "bench": ["sbi>=0.23"],
        # Tipsy snapshots (NIHAO, gasoline/ChaNGa) for `galmass ingest`: read and written through pynbody (wheels).
        "sim": ["pynbody>=2.0"],
        # The independent check of flattened mocks (tests/test_flattened.py): Cappellari's JAM and MGE fits.
        # jampy 9 needs Python >= 3.12 (PEP 695 syntax); 8.1 is the newest that runs on 3.10-3.11.
        "jam": ["jampy>=8.1,<9", "mgefit>=6.2"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "tarp>=0.1.1", "deprecation>=2.1"],
    },
    entry_points={"console_scripts": ["galmass=galmass.cli:main"]},
)
