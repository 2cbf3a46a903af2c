"""DataConfig.validate: bad values name the field, the value and what is allowed."""

import pytest

from shc.data import DataConfig, prepare_data


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
