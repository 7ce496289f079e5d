"""Bundled files named as fastunlearn:RELATIVE resolve inside the installed package, from any
working directory; every other path is left as it was."""

import pytest

from fastunlearn.engine import UnlearnConfig
from fastunlearn.resources import PACKAGE_DIR, bundled_configs, resolve_path


def test_bundled_files_resolve_inside_the_package():
    path = resolve_path("fastunlearn:demo_data/refusals.txt")
    assert path == PACKAGE_DIR / "demo_data" / "refusals.txt" and path.is_file()
    assert resolve_path("relative/file.jsonl").as_posix() == "relative/file.jsonl"


@pytest.mark.parametrize(
    "name", ["fastunlearn:configs/missing.yaml", "fastunlearn:../setup.py", "fastunlearn:configs"]
)
def test_a_missing_or_outside_bundled_file_is_named(name):
    with pytest.raises(FileNotFoundError, match="no such file in the fastunlearn package") as error:
        resolve_path(name)
    assert "fastunlearn:configs/demo.yaml" in str(error.value)  # the bundled ones are listed


@pytest.mark.parametrize("config", bundled_configs())
def test_bundled_configs_load_from_any_directory(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = UnlearnConfig.load(config)
    inputs = [loaded.data.forget.path, loaded.data.positives.path, loaded.data.retain.path]
    inputs += [loaded.data.normal.path, loaded.train.deepspeed]
    for path in filter(None, inputs):
        # Bundled files are resolved when the config is read (user data is the user's).
        assert not path.startswith("fastunlearn:")
        assert not path.startswith(str(PACKAGE_DIR)) or resolve_path(path).is_file()
    # Outputs stay where the user runs the job.
    assert not loaded.train.output_dir.startswith(str(PACKAGE_DIR))


def test_overrides_may_name_bundled_files_too():
    config = UnlearnConfig.load(None, ["data.retain.path=fastunlearn:demo_data/benign_train.jsonl"])
    assert config.data.retain.path == str(PACKAGE_DIR / "demo_data" / "benign_train.jsonl")
    with pytest.raises(FileNotFoundError, match="fastunlearn:demo_data/nope.jsonl"):
        UnlearnConfig.load(None, ["data.retain.path=fastunlearn:demo_data/nope.jsonl"])
