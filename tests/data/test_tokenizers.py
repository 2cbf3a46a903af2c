"""Byte, BPE and HF-directory tokenizers: round trips, specials, caching."""

import pytest

from hyperconn.data import ByteTokenizer, DataConfig, PretrainedTokenizer, Tokenizer, load_tokenizer, prepare_data
from hyperconn.data import prepare as prepare_module
from hyperconn.data.tokenizers import EOS_TOKEN, train_bpe

from .conftest import make_text

SAMPLES = ["", "plain ASCII", "naïve café — ℵ₀ 🌹\n\ttabs", "Ünïcödé" * 20]


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_byte_specials_and_invalid_utf8():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.eos_id) == (257, 256)
    assert tok.decode([*tok.encode("ab"), tok.eos_id, *tok.encode("c")]) == "abc"
    cut = tok.encode("é")[:1]  # half a character, as a sampled sequence may end
    assert tok.decode(cut) == "\ufffd"


def test_bpe_trains_round_trips_and_is_cached(tmp_path, text_folder, monkeypatch):
    cfg = DataConfig(source=str(text_folder), tokenizer="bpe", bpe_vocab_size=300, cache_dir=str(tmp_path / "c"))
    tok = load_tokenizer(cfg)
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 300
    assert tok.decode([tok.eos_id]) == ""
    for text in [*SAMPLES, make_text(7, 5)]:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(make_text(1, 20))) < len(make_text(1, 20).encode())  # merges compress
    files = list((tmp_path / "c" / "tokenizers").rglob("tokenizer.json"))
    assert len(files) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached BPE should be reused")

    monkeypatch.setattr(prepare_module, "train_bpe", no_training)
    again = load_tokenizer(cfg)
    assert again.fingerprint == tok.fingerprint
    data = prepare_data(cfg)
    assert data.tokenizer.fingerprint == tok.fingerprint
    # another vocabulary size is another cache entry
    with pytest.raises(AssertionError, match="reused"):
        load_tokenizer(DataConfig(**{**cfg.__dict__, "bpe_vocab_size": 320}))


def test_bpe_training_is_deterministic(tmp_path):
    texts = [make_text(i, 30) for i in range(4)]
    a = train_bpe(iter(texts), 290, tmp_path / "a" / "tokenizer.json")
    b = train_bpe(iter(texts), 290, tmp_path / "b" / "tokenizer.json")
    assert a.path.read_bytes() == b.path.read_bytes()


@pytest.fixture
def hf_tokenizer_dir(tmp_path):
    """A tiny byte-level BPE wrapped in PreTrainedTokenizerFast and saved as an HF tokenizer directory."""
    from transformers import PreTrainedTokenizerFast

    bpe = train_bpe(iter([make_text(i, 30) for i in range(3)]), 280, tmp_path / "raw" / "tokenizer.json")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(bpe.path), eos_token=EOS_TOKEN)
    fast.add_special_tokens({"pad_token": "<pad>"})
    out = tmp_path / "hf_tok"
    fast.save_pretrained(str(out))
    return out


def test_autotokenizer_directory(hf_tokenizer_dir, tmp_path):
    tok = load_tokenizer(DataConfig(tokenizer=str(hf_tokenizer_dir), cache_dir=str(tmp_path / "c")))
    assert isinstance(tok, PretrainedTokenizer)
    assert tok.vocab_size == 281  # 280 trained ids + the added <pad>
    assert tok.eos_id == tok._tok.convert_tokens_to_ids(EOS_TOKEN)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    assert tok.decode([*tok.encode("to be"), tok.eos_id]) == "to be"


def test_tokenizer_fingerprint_ignores_model_weights_but_not_tokenizer_files(hf_tokenizer_dir, tmp_path):
    cfg = DataConfig(tokenizer=f"local:{hf_tokenizer_dir}", cache_dir=str(tmp_path / "c"))
    before = load_tokenizer(cfg).fingerprint
    (hf_tokenizer_dir / "model.safetensors").write_bytes(b"\0" * 4096)  # a model download's weights
    assert load_tokenizer(cfg).fingerprint == before
    config = hf_tokenizer_dir / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"note": 1, ', 1))
    assert load_tokenizer(cfg).fingerprint != before
