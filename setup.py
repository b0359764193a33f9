from setuptools import find_packages, setup

# Optional readers for real data: fastMRI HDF5 (h5py), NIfTI (nibabel), DICOM (pydicom) and
# the MNI152 T1 template that ships inside nilearn's wheel (real anatomy without a download).
DATA = ["h5py>=3.8", "nibabel>=5", "nilearn>=0.10", "pydicom>=2.4"]

setup(
    name="mrijax",
    version="0.1.0",
    description="Testing deep-learning MRI reconstruction for instabilities and hallucinations, in JAX.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mrijax", "mrijax.*", "experiments", "experiments.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "numpy>=1.24",
        # scipy: .mat files (scipy.io) and float64 reference computations; jax already needs it.
        "scipy>=1.10",
        "orbax-checkpoint>=0.5",
        "matplotlib>=3.7",
        "absl-py>=1.4",
    ],
    extras_require={
        "data": DATA,
        # scikit-image: the SSIM reference the tests compare against.  pytest-xdist: the suite
        # is mostly XLA compilation, which is single-threaded; two workers use both cores.
        "test": ["pytest>=7", "pytest-xdist>=3", "scikit-image>=0.21"] + DATA,
    },
)
