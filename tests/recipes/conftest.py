# The recipes train tiny models as the engine tests do: the same tokenizer, one thread, and
# datasets offline.
from tests.data.conftest import offline_datasets  # noqa: F401 - autouse
from tests.engine.conftest import one_thread, tokenizer  # noqa: F401 - autouse / fixture
