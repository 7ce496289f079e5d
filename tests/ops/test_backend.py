import pytest
import torch

from fastunlearn.ops import backend
from fastunlearn.ops.backend import ENV_VAR, select_backend

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_cpu_defaults_to_cpp_when_built_else_torch():
    assert select_backend(CPU) == ("cpp" if backend.cpp_available() else "torch")


def test_cpu_under_triton_interpreter_uses_triton(monkeypatch):
    if not backend.triton_available():
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_backend(CPU) == "triton"


def test_keyword_beats_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpp")
    assert select_backend(CPU, "torch") == "torch"


def test_environment_forces_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    assert select_backend(CPU) == "torch"
    monkeypatch.setenv(ENV_VAR, "auto")
    assert select_backend(CPU) == ("cpp" if backend.cpp_available() else "torch")


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"backend='cuda-magic' is not one of"):
        select_backend(CPU, "cuda-magic")


def test_unknown_backend_from_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match=ENV_VAR):
        select_backend(CPU)


def test_triton_on_cpu_without_interpreter_explains_itself():
    if not backend.triton_available():
        pytest.skip("triton not installed")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        select_backend(CPU, "triton")


def test_missing_cpp_extension_explains_how_to_build(monkeypatch):
    monkeypatch.setattr(backend, "cpp_available", lambda: False)
    with pytest.raises(RuntimeError, match="no-build-isolation"):
        select_backend(CPU, "cpp")


def test_cpp_refuses_non_cpu_tensors():
    with pytest.raises(RuntimeError, match="CPU tensors only"):
        select_backend(torch.device("meta"), "cpp")
