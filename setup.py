"""keras-skipblock: Bias Loss and SkipblockNet for Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="keras-skipblock",
    version="0.1.0",
    description="Bias Loss and SkipblockNet (ICCV 2021) for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_skipblock", "keras_skipblock.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Tested with keras 3.15.1 / tensorflow 2.21.0 (.venv) and with every floor below
        # (.venv-oldest, tools/oldest-versions.txt; CI runs the fast tests there). _compat's tests
        # fail loudly on a release that changes a private API we use.
        "keras>=3.15,<3.16",  # 3.14 cannot revive a saved BiasLossModel; <= 3.13 rejects its metrics
        "tensorflow>=2.17,<2.22",
        "tensorflow-datasets>=4.9.3",  # 4.9.0's protos need protobuf <= 3.20, TF 2.17 has 4.25
        "keras-cv>=0.9",
        "absl-py>=1.4",
        "tensorboard>=2.17",  # the recipes' TensorBoard logs
        # Every TFDS data set (cifar100, food101, imagenet2012, voc) needs it: tfds' DatasetBuilder
        # looks up its checksums through code_path, which imports this backport, and TFDS
        # declares it only for Python < 3.9.
        "importlib_resources>=6",
        "ai-edge-litert>=2.3",
        "numpy>=1.26",
        "scikit-learn>=1.4",  # the `digits` data set (conversion/evaluation --representative_data=digits)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "matplotlib>=3.8"],
        "plots": ["matplotlib>=3.8"],
    },
)
