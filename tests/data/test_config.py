"""DataConfig.validate: bad values name the field, the value and what is allowed."""

import pytest

from hyperconn.data import DataConfig, prepare_data


def test_defaults_are_valid():
    DataConfig().validate()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"source": "shakespear"}, r"source='shakespear'.*'shakespeare'"),
        ({"source": ""}, "source=''"),
        ({"source": "hf:"}, "source='hf:'"),
        ({"tokenizer": "bytes"}, r"tokenizer='bytes'.*\('byte', 'bpe'\)"),
        ({"bpe_vocab_size": 100}, r"bpe_vocab_size=100.*\[257,"),
        ({"bpe_vocab_size": 2048.0}, "bpe_vocab_size=2048.0"),
        ({"val_fraction": 0.0}, r"val_fraction=0.0.*between 0 and 1"),
        ({"val_fraction": 1.5}, "val_fraction=1.5"),
        ({"hf_max_documents": 1}, "hf_max_documents=1"),
        ({"hf_streaming": "yes"}, "hf_streaming='yes'"),
        ({"hf_split": ""}, "hf_split=''"),
        ({"hf_text_field": None}, "hf_text_field=None"),
        ({"hf_config": ""}, "hf_config=''"),
        ({"cache_dir": ""}, "cache_dir=''"),
        ({"val_fraction": float("nan")}, "val_fraction=nan"),
        ({"pipeline": "streaming"}, r"pipeline='streaming'.*\('cached', 'stream'\)"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"max_tokens": -5}, "max_tokens=-5"),
        ({"max_tokens": float("nan")}, "max_tokens=nan"),
        ({"max_tokens": 1e9}, "max_tokens=1000000000.0"),
        ({"stream_val_tokens": 0}, "stream_val_tokens=0"),
        ({"stream_shuffle_windows": 0}, "stream_shuffle_windows=0"),
        ({"stream_shuffle_windows": True}, "stream_shuffle_windows=True"),
    ],
)
def test_bad_values(changes, match):
    cfg = DataConfig(**changes)
    with pytest.raises(ValueError, match=match):
        cfg.validate()
    with pytest.raises(ValueError, match=match):
        prepare_data(cfg)  # refused before anything is read or written


@pytest.mark.parametrize(
    "changes",
    [
        {"source": "no/such/folder"},
        {"source": "missing.txt"},
        {"source": "hf:./no_such_dataset"},
        {"tokenizer": "./no_such_tokenizer"},
        {"tokenizer": "local:no_such_qwen3"},
    ],
)
def test_missing_paths(changes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such|no local"):
        DataConfig(**changes).validate()


def test_folder_without_text_and_tokenizer_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no \*\.txt"):
        DataConfig(source=str(tmp_path / "empty")).validate()
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a directory"):
        DataConfig(tokenizer=str(tmp_path / "tok.json")).validate()


def test_shard_sources_and_local_tokenizers(tmp_path, local_tokenizer):
    with pytest.raises(FileNotFoundError, match=r"index.json does not exist.*hyperconn data prepare"):
        DataConfig(source=f"shards:{tmp_path}").validate()
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(ValueError, match="pipeline='stream': shards are already tokenised"):
        DataConfig(source=f"shards:{tmp_path}", pipeline="stream").validate()
    DataConfig(source=f"shards:{tmp_path}").validate()
    from hyperconn.data import PretrainedTokenizer, load_tokenizer

    tok = load_tokenizer(DataConfig(tokenizer=f"local:{local_tokenizer}", cache_dir=str(tmp_path / "c")))
    assert isinstance(tok, PretrainedTokenizer) and tok.path == local_tokenizer.resolve()


def test_which_configs_make_rank0_build_a_cache(tmp_path):
    assert DataConfig().rank0_builds_cache  # the token cache
    assert not DataConfig(pipeline="stream").rank0_builds_cache  # every rank tokenises its own share
    assert DataConfig(pipeline="stream", tokenizer="bpe").rank0_builds_cache  # the BPE is trained once
    assert not DataConfig(source=f"shards:{tmp_path}").rank0_builds_cache
    assert not DataConfig(source=f"shards:{tmp_path}", tokenizer="bpe").rank0_builds_cache
