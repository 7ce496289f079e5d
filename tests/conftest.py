import torch


def pytest_collection_modifyitems(config, items):
    # CUDA tests are collected only where a GPU exists (run them there with -m cuda).
    if torch.cuda.is_available():
        return
    cuda_items = [item for item in items if "cuda" in item.keywords]
    if cuda_items:
        config.hook.pytest_deselected(items=cuda_items)
        items[:] = [item for item in items if "cuda" not in item.keywords]
