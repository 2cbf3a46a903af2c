import pytest
import torch

# the hf extra is optional: without transformers this directory is not collected (the test modules
# import hyperconn.hf, which would fail naming the missing extra)
try:
    import transformers  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Width-32 models: on a CPU shared with other jobs, two threads spin-waiting on 32x64 matmuls
    made every forward ~300x slower than one thread. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
