"""Config dataclasses from YAML files and ``key=value`` overrides, checked by OmegaConf.

Unknown keys are refused with the nearest valid key suggested and values are converted to
each field's declared type, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from fastunlearn.resources import resolve_path

ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's fields."""


def load_config(
    cls: type[ConfigT], path: str | Path | None = None, overrides: Iterable[str] = ()
) -> ConfigT:
    """Defaults of dataclass ``cls``, then YAML ``path``, then ``a.b=value`` overrides.

    ConfigError names the source (file or --set) and, for an unknown key, the nearest one;
    FileNotFoundError for a missing file.
    """
    # Imported here: the config classes (and the command line's --help) need no omegaconf.
    from omegaconf import OmegaConf

    layers = [OmegaConf.structured(cls)]
    sources = []
    if path is not None:
        path = resolve_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        layers.append(_checked(lambda: OmegaConf.load(path), str(path)))
        sources.append(str(path))
    overrides = list(overrides)
    for text in overrides:
        if "=" not in text:
            raise ConfigError(
                f"override {text!r} must look like key=value (e.g. train.learning_rate=1e-4)"
            )
    if overrides:
        layers.append(_checked(lambda: OmegaConf.from_dotlist(overrides), "--set"))
        sources.append("--set")
    source = " + ".join(sources) or "config"
    merged = _checked(lambda: OmegaConf.merge(*layers), source)
    # The dataclasses' own checks (__post_init__) run here and raise ValueError.
    return _checked(lambda: OmegaConf.to_object(merged), source)


def _checked(build: Callable[[], ResultT], source: str) -> ResultT:
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    try:
        return build()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from None
    except OmegaConfBaseException as error:
        # OmegaConf's first line names the key and, for a typo, suggests the nearest one.
        first_line = str(error).splitlines()[0]
        key = getattr(error, "full_key", None)
        where = f" (key {key})" if key else ""
        raise ConfigError(f"{source}: {first_line}{where}") from None
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
