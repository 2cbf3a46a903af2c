"""Saving and reloading a converted model: state_dict round trip, save_pretrained + hyperconn.hf.load,
tied embeddings, damaged directories."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from packaging.version import Version
from safetensors.torch import load_file, save_file

import hyperconn.hf

from .helpers import FAMILY_PARAMS, perturb_connections, tiny_config, tiny_model, token_batch, transformers


def converted(family="llama", kind="shc", streams=4, seed=0, **config):
    model = hyperconn.hf.convert(tiny_model(family, seed=seed, **config), kind, streams)
    perturb_connections(model, seed=seed + 1)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_state_dict_round_trip_into_a_freshly_converted_copy():
    source = converted(seed=0)
    target = converted(seed=5)  # other weights everywhere
    ids = token_batch()
    assert (logits(source, ids) - logits(target, ids)).abs().max() > 1e-2
    target.load_state_dict(source.state_dict())  # strict
    torch.testing.assert_close(logits(target, ids), logits(source, ids), atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
@pytest.mark.parametrize(("kind", "streams"), [("shc", 4), pytest.param("hc", 3, marks=pytest.mark.slow)])
def test_save_pretrained_then_load(tmp_path, family, kind, streams):
    model = converted(family, kind, streams, tied=family == "qwen3")
    model.save_pretrained(tmp_path)
    entry = json.loads((tmp_path / "config.json").read_text())["hyperconn"]
    assert entry == {"kind": kind, "num_streams": streams, "init": "preserve", "options": {}, "version": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unexpected in the checkpoint
        reloaded = hyperconn.hf.load(tmp_path)
    ids = token_batch()
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=0, rtol=0)
    assert len(hyperconn.hf.hyper_connections(reloaded)) == 2 * model.config.num_hidden_layers
    assert hyperconn.hf.conversion_of(reloaded) == hyperconn.hf.conversion_of(model)
    assert not reloaded.training


def test_tied_embeddings_survive_the_round_trip(tmp_path):
    model = converted("qwen3", tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # a change only a tied head would see
    model.save_pretrained(tmp_path)
    reloaded = hyperconn.hf.load(tmp_path)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    ids = token_batch()
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=0, rtol=0)


def test_paper_init_and_options_are_recorded_and_rebuilt(tmp_path):
    model = hyperconn.hf.convert(tiny_model("mistral"), "mhc", 4, init="paper", sinkhorn_iters=5)
    model.save_pretrained(tmp_path)
    reloaded = hyperconn.hf.load(tmp_path)
    layers = reloaded.model.layers
    assert all(layer.stream_reduction == "sum" for layer in layers)
    assert all(layer.attn_conn.sinkhorn_iters == 5 for layer in layers)
    ids = token_batch()
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=0, rtol=0)


def test_load_passes_dtype_through(tmp_path):
    converted().save_pretrained(tmp_path)
    dtype_arg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = hyperconn.hf.load(tmp_path, **{dtype_arg: torch.bfloat16})
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.isfinite(model(token_batch()).logits).all()


def test_a_plain_checkpoint_is_refused(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    with pytest.raises(ValueError) as raised:
        hyperconn.hf.load(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path}: config.json has no 'hyperconn' entry")
    assert "not saved from a converted model" in message and "hyperconn.hf.convert(model, kind" in message
    assert "attn_conn" not in message  # not a list of missing connection tensors


@pytest.mark.parametrize("sharded", [False, True])
def test_weights_saved_from_an_unconverted_model_are_refused_as_such(tmp_path, sharded):
    """A config object handed to from_config after convert changed it: config.json carries the entry,
    the weights none of the connections. One message saying so, not a list of missing tensors."""
    config = tiny_config("llama")
    hyperconn.hf.convert(transformers.AutoModelForCausalLM.from_config(config), "shc", 4)
    assert "hyperconn" in config.to_dict()  # convert wrote the entry into the shared config
    plain = transformers.AutoModelForCausalLM.from_config(config)  # never converted
    plain.save_pretrained(tmp_path, **({"max_shard_size": "20KB"} if sharded else {}))
    assert (tmp_path / "model.safetensors.index.json").is_file() == sharded
    with pytest.raises(ValueError) as raised:
        hyperconn.hf.load(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path}: config.json has a 'hyperconn' entry but the weights hold none")
    assert "not saved from a converted model" in message and "hyperconn.hf.convert(" in message


def test_missing_connection_tensors_are_an_error(tmp_path):
    """A directory whose config says converted but whose weights lack the connections."""
    converted().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    dropped = "model.layers.1.mlp_conn.bias"
    del state[dropped]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=dropped):
        hyperconn.hf.load(tmp_path)


def test_missing_model_tensors_are_an_error(tmp_path):
    converted().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    del state["model.layers.2.self_attn.q_proj.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="q_proj"):
        hyperconn.hf.load(tmp_path)


def test_a_bad_config_entry_is_refused(tmp_path):
    converted().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hyperconn"]["kind"] = "shcc"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown connection kind 'shcc'"):
        hyperconn.hf.load(tmp_path)


def test_sharded_checkpoint_loads(tmp_path):
    model = converted()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    reloaded = hyperconn.hf.load(tmp_path)
    ids = token_batch()
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=0, rtol=0)


def test_base_checkpoint_then_convert_equals_the_base_model(tmp_path):
    """The usual path: from_pretrained of a plain checkpoint, convert, same logits."""
    base = tiny_model("qwen2")
    base.save_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = token_batch()
    expected = logits(base, ids)
    hyperconn.hf.convert(model, "kromhc", 4)
    torch.testing.assert_close(logits(model, ids), expected, atol=1e-5, rtol=0)


LEGACY = Path(__file__).parent / "fixtures" / "shc-0.1-llama"


def test_a_directory_saved_before_the_rename_loads_and_resaves_under_the_new_key(tmp_path):
    """``fixtures/shc-0.1-llama`` was written by ``shc.hf`` 0.1.0 (the package's name before the
    rename): its config.json holds the conversion under ``"shc"``. It loads to the logits that
    version computed, and saving it again writes the current key alone."""
    assert "shc" in json.loads((LEGACY / "config.json").read_text())
    model = hyperconn.hf.load(LEGACY)
    expected = torch.load(LEGACY / "expected_logits.pt", weights_only=True)
    torch.testing.assert_close(logits(model, expected["ids"]), expected["logits"], atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "shc" not in saved and saved["hyperconn"]["kind"] == "shc" and saved["hyperconn"]["num_streams"] == 4
