import importlib.util
import os

import torch

if not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
    # Triton fixes its language functions (tl.sum, ...) as interpreted or compiled when it is
    # first imported: import it under the interpreter so the Triton tests can run on CPU
    # tensors, then restore the environment so every other test keeps the automatic backend.
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    import triton  # noqa: F401

    if previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = previous


def pytest_collection_modifyitems(config, items):
    # CUDA tests are collected only where a GPU exists (run them there with -m cuda).
    if torch.cuda.is_available():
        return
    cuda_items = [item for item in items if "cuda" in item.keywords]
    if cuda_items:
        config.hook.pytest_deselected(items=cuda_items)
        items[:] = [item for item in items if "cuda" not in item.keywords]
