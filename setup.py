"""Installs ``dmha_modules``: Double Multi-Head Attention speaker and age models for SpeechBrain."""

from setuptools import find_packages, setup

setup(
    name="dmha",
    version="0.1.0",
    description=(
        "Double Multi-Head Attention speaker embeddings and speaker age "
        "estimation as SpeechBrain modules"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dmha_modules", "dmha_modules.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        # torchaudio 2.11 is the last release; its compiled part loads only
        # against the same torch, so the two are pinned together.
        "torch==2.11.*",
        "torchaudio==2.11.*",
        "speechbrain==1.1.*",
        "hyperpyyaml",
        "soundfile",
        "numpy",
        "scipy",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # librosa is the independent reference the feature tests compare against.
        # scikit-learn is the reference for the classification metrics.
        "test": ["pytest", "librosa", "scikit-learn"],
    },
    entry_points={"console_scripts": ["dmha=dmha_modules.cli:main"]},
)
