import pytest
import torch

from tests.data.conftest import offline_datasets  # noqa: F401 - autouse: datasets stays offline
from tests.engine.helpers import tiny_opt, tiny_tokenizer, write_data


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~20x faster on one thread than on two busy cores (OpenMP waits for
    the other thread), and the subprocesses these tests start run on one thread as well."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_opt(tokenizer)


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deepspeed: starts a multi-rank DeepSpeed job on CPU (needs deepspeed)"
    )
