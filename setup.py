"""The optional C++ extension of fastunlearn; the package itself is described in pyproject.toml.

The C++ CPU kernels in csrc/ are compiled into ``fastunlearn._C`` when torch and a C++
compiler are available at build time (``pip install --no-build-isolation -e .``). When the
build is skipped or fails, the package still installs and the ops use the PyTorch path.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

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


# Everything else about the package is in pyproject.toml.
setup(**cpp_extension_kwargs())
