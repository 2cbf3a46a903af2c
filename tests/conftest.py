import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_fresh_dynamo():
    """Every test starts from the same RNG state and an empty torch.compile cache."""
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
