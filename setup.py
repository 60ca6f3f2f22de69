"""Installs ``dmha_modules``: Double Multi-Head Attention speaker and age models for SpeechBrain."""

from setuptools import find_packages, setup

# Ranges for installing dmha beside other packages; the exact tested set is
# constraints.txt (README), written by .ci/refresh-lock. Upper bounds stop at
# the next major release, which nobody has tested.
# ONNX export (torch.onnx.export(dynamo=True) needs onnxscript) and ONNX
# Runtime inference; the lower bounds are the versions tested with torch 2.11.
EXPORT_REQUIRES = ["onnx>=1.23,<2", "onnxruntime>=1.32,<2", "onnxscript>=0.7,<1"]

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
        # torchaudio's compiled part loads only against the torch release it
        # was built for, and its metadata does not say which (2.11.1 accepts
        # torch 2.11.0 and fails to load beside it): the pair is pinned exactly.
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "speechbrain>=1.1,<1.2",
        "hyperpyyaml>=1.2,<2",
        "soundfile>=0.12,<1",
        # AAC (.m4a, VoxCeleb2 as distributed), which libsndfile cannot decode:
        # PyAV's wheels carry their own FFmpeg, so no system decoder is needed.
        "av>=14,<19",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "tqdm>=4.60,<5",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "export": EXPORT_REQUIRES,
        # librosa is the independent reference the feature tests compare against.
        # scikit-learn is the reference for the classification metrics, kaldiio
        # the independent reader of the Kaldi .ark files `dmha embed` writes.
        # The ONNX packages: tests/test_onnx.py and the onnx_export doctests.
        # MkDocs and mkdocstrings: tests/test_docs.py builds the docs site.
        "test": [
            "pytest>=8",
            "librosa>=0.10,<1",
            "scikit-learn>=1.3,<2",
            "kaldiio>=2.18,<3",
            "mkdocs>=1.6,<2",
            "mkdocstrings-python>=1.10,<3",
        ]
        + EXPORT_REQUIRES,
    },
    entry_points={"console_scripts": ["dmha=dmha_modules.cli:main"]},
)
