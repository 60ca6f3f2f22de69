"""Installs ``dmha_modules``: Double Multi-Head Attention speaker and age models for SpeechBrain."""

from setuptools import find_packages, setup

# ONNX export (torch.onnx.export(dynamo=True) needs onnxscript) and ONNX
# Runtime inference; the lower bounds are the versions tested with torch 2.11.
EXPORT_REQUIRES = ["onnx>=1.23", "onnxruntime>=1.32", "onnxscript>=0.7"]

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
        "export": EXPORT_REQUIRES,
        # librosa is the independent reference the feature tests compare against.
        # scikit-learn is the reference for the classification metrics, kaldiio
        # the independent reader of the Kaldi .ark files `dmha embed` writes.
        # The ONNX packages: tests/test_onnx.py and the onnx_export doctests.
        "test": ["pytest", "librosa", "scikit-learn", "kaldiio"] + EXPORT_REQUIRES,
    },
    entry_points={"console_scripts": ["dmha=dmha_modules.cli:main"]},
)
