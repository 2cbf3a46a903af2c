"""Next-token sampling: greedy, top-k support, bad settings."""

import pytest
import torch

from hyperconn.model.sampling import check_sampling, sample


def test_greedy_and_top1_are_the_argmax():
    logits = torch.randn(5, 11)
    assert torch.equal(sample(logits, 0.0, None), logits.argmax(-1, keepdim=True))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, 0.7, 1, gen), logits.argmax(-1, keepdim=True))


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.arange(10.0).expand(200, 10)
    ids = sample(logits, 5.0, 3, torch.Generator().manual_seed(1))
    assert set(ids.flatten().tolist()) <= {7, 8, 9}
    assert len(set(ids.flatten().tolist())) == 3  # a high temperature reaches all three


@pytest.mark.parametrize(("temperature", "top_k"), [(-0.1, None), (float("nan"), None), (1.0, 0)])
def test_bad_settings_are_refused(temperature, top_k):
    with pytest.raises(ValueError, match="temperature|top_k"):
        check_sampling(temperature, top_k)
