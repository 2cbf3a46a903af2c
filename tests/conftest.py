import os

# Triton decides between compiling and interpreting when a kernel is decorated, and torch._dynamo
# (imported by transformers, torch.compile...) imports Triton: so the interpreter switch for
# tests/kernels is set here, before anything else is imported. It affects nothing else on the CPU
# (Inductor's CPU backend does not use Triton; the connections never launch kernels for CPU
# tensors unless a test asks for backend="triton").
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_fresh_dynamo():
    """Every test starts from the same RNG state and an empty torch.compile cache."""
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
