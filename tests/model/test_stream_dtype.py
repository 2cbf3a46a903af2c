"""``model.stream_dtype="bfloat16"``: the streams between sublayers are bf16, every connection's
coefficient math float32, the values close to the float32-stream model; the default unchanged."""

from __future__ import annotations

import pytest
import torch
from tests.support import SMALL, perturb, small_model

from hyperconn.model import LanguageModel, ModelConfig

VOCAB = SMALL["vocab_size"]


def micro(kind: str, stream_dtype: str = "float32") -> LanguageModel:
    model = small_model(kind, stream_dtype=stream_dtype)
    perturb(model.connections(), scale=0.3, seed=1)  # off the near-identity init: the mixing matters
    return model


def record(model: LanguageModel):
    """Streams dtypes seen by every connection and the dtypes of its coefficients."""
    seen = []

    def hook(conn, args):
        streams = args[0]
        seen.append((streams.dtype, *(t.dtype for t in conn.mixing(streams))))

    handles = [c.register_forward_pre_hook(hook) for c in model.connections()]
    return seen, handles


def test_invalid_stream_dtype_is_refused():
    with pytest.raises(ValueError, match=r"model.stream_dtype must be one of float32, bfloat16, got 'float16'"):
        ModelConfig(stream_dtype="float16").validate()


@pytest.mark.parametrize("kind", ["shc", "mhc", "hc"])
@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_streams_fp32_coefficients_close_to_fp32(kind, autocast):
    ref, model = micro(kind), micro(kind, "bfloat16")
    model.load_state_dict(ref.state_dict())
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    seen, handles = record(model)
    ref_seen, ref_handles = record(ref)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, want = model(idx), ref(idx)
    for h in handles + ref_handles:
        h.remove()
    assert seen and all(s == (torch.bfloat16, torch.float32, torch.float32, torch.float32) for s in seen)
    assert all(s[0] == torch.float32 for s in ref_seen)  # default: float32 streams
    assert out.dtype == want.dtype and not torch.equal(out, want)  # the bf16 streams did round
    # the streams round to bf16 (relative 2^-9) at each of the 4 sublayers' outputs: a few bf16
    # spacings of the logits' scale
    scale = want.abs().max().item()
    assert (out.float() - want.float()).abs().max().item() <= 8 * 2.0**-7 * scale
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_decode_with_bf16_streams_matches_the_full_forward():
    model = micro("shc", "bfloat16").eval()
    idx = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(1)
        steps = [model(idx[:, :4], 0, cache)] + [model(idx[:, t : t + 1], t, cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-2, rtol=2e-2)
