"""Files shipped inside the package (configs, demo data), named as ``fastunlearn:RELATIVE``.

A config or command line may write ``fastunlearn:configs/demo.yaml`` or
``fastunlearn:demo_data/refusals.txt``; that resolves inside the installed package, so the
bundled configs work from any directory and after ``pip install``. Any other path is an
ordinary one, relative to the working directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_PREFIX = "fastunlearn:"
PACKAGE_DIR = Path(__file__).resolve().parent


def resolve_path(path: str | Path) -> Path:
    """``fastunlearn:RELATIVE`` -> the file inside the package (which must exist); any
    other path unchanged."""
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(path)
    relative = text[len(PACKAGE_PREFIX) :].lstrip("/")
    resolved = PACKAGE_DIR / relative
    if not resolved.is_file() or PACKAGE_DIR not in resolved.resolve().parents:
        raise FileNotFoundError(
            f"{text}: no such file in the fastunlearn package (bundled configs: "
            f"{', '.join(bundled_configs())})"
        )
    return resolved


def bundled_configs() -> list[str]:
    """The run configs shipped with the package, as ``fastunlearn:configs/NAME.yaml``."""
    return [f"{PACKAGE_PREFIX}configs/{p.name}" for p in sorted(PACKAGE_DIR.glob("configs/*.yaml"))]
