"""parse_source: one typed source per string form, str() round trip, one clear ValueError per bad
form; the fingerprints (and so the cache keys) are the formulas the token cache has always used."""

import hashlib
import json
import warnings

import numpy as np
import pytest

from hyperconn.data import DataConfig, prepare_data
from hyperconn.data.bundled import BUNDLED, package_corpus_dir
from hyperconn.data.sources import (
    BundledSource,
    FileSource,
    FolderSource,
    HFSource,
    ShardsSource,
    SourceSettings,
    parse_source,
)

from .conftest import make_text


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(obj) -> str:
    """The fingerprint formula, written out here independently of the package."""
    return sha(json.dumps(obj, sort_keys=True).encode())


@pytest.fixture
def one_file(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text(make_text(7, 50), encoding="utf-8")
    return path


def test_every_form_parses_to_its_type(tmp_path, one_file, text_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = SourceSettings(val_fraction=0.3, hf_split="validation", hf_text_field="body", hf_max_documents=9)
    cases = {
        "shakespeare": BundledSource,
        "pycode": BundledSource,
        str(one_file): FileSource,
        "one.txt": FileSource,  # relative to the current folder
        str(text_folder): FolderSource,
        "texts": FolderSource,
        "hf:someone/a-dataset": HFSource,
        f"hf:{one_file}": HFSource,
        f"shards:{tmp_path / 'sh'}": ShardsSource,
        "missing/file.txt": FileSource,  # looks like a path: validate() says it is missing
    }
    for text, kind in cases.items():
        source = parse_source(text, settings)
        assert type(source) is kind, text
        assert parse_source(str(source), settings) == source  # the string form round trips
    assert str(parse_source(str(one_file))) == str(one_file)  # absolute paths come back unchanged
    assert str(parse_source("one.txt")) == str(one_file)  # relative ones resolved
    assert str(parse_source(f"shards:{tmp_path}")) == f"shards:{tmp_path}"
    assert str(parse_source("hf:someone/a-dataset")) == "hf:someone/a-dataset"  # a hub name is kept as written
    hf = parse_source("hf:someone/a-dataset", settings)
    assert (hf.split, hf.text_field, hf.max_documents, hf.val_fraction) == ("validation", "body", 9, 0.3)
    assert parse_source(str(text_folder), settings).val_fraction == 0.3
    for name, corpus in BUNDLED.items():
        assert parse_source(name).corpus is corpus and str(parse_source(name)) == name


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"source='': must be a non-empty string.*'pycode', 'shakespeare'"),
        ("   ", r"source='   '"),
        (None, r"source=None"),
        ("hf:", r"source='hf:': 'hf:' must be followed by a dataset name or path"),
        ("shards:", r"source='shards:': 'shards:' must be followed by the shard directory"),
        ("shakespear", r"source='shakespear' is not allowed: use a bundled corpus \('pycode', 'shakespeare'\)"),
    ],
)
def test_bad_forms_are_one_clear_value_error(text, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=match):
        parse_source(text)


def test_validate_names_what_is_missing(tmp_path, text_folder):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        parse_source(str(tmp_path / "nope.txt")).validate()
    with pytest.raises(FileNotFoundError, match="no local dataset"):
        parse_source("hf:./no_such_dataset").validate()
    with pytest.raises(FileNotFoundError, match=r"index.json does not exist"):
        parse_source(f"shards:{tmp_path}").validate()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no \*\.txt"):
        parse_source(str(tmp_path / "empty")).validate()
    with pytest.raises(ValueError, match=r"val_fraction=1.5"):
        FolderSource(text_folder, val_fraction=1.5).validate()
    with pytest.raises(ValueError, match=r"hf_max_documents=1"):
        HFSource("someone/ds", max_documents=1).validate()
    with pytest.raises(ValueError, match=r"hf_split=''"):
        HFSource("someone/ds", split="").validate()
    for text in ("shakespeare", "pycode", str(text_folder), "hf:someone/ds"):
        parse_source(text).validate()  # nothing missing: no error


def test_config_validate_returns_the_parsed_source(text_folder):
    cfg = DataConfig(source=str(text_folder), val_fraction=0.25)
    source = cfg.validate()
    assert source == FolderSource(text_folder.resolve(), 0.25) == cfg.parsed_source()


def test_bundled_fingerprint_is_the_manifest_formula():
    for name, corpus in BUNDLED.items():
        manifest = json.loads((package_corpus_dir() / corpus.manifest_file).read_text(encoding="utf-8"))
        held_out = manifest[corpus.held_out_field]
        expected = canonical({"source": name, "sha256": manifest["sha256"], "val": held_out})
        assert parse_source(name).fingerprint() == expected


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_file_and_folder_fingerprints_are_the_content_formulas(tmp_path, one_file, text_folder, fraction):
    expected = canonical({"file": sha(one_file.read_bytes()), "val_fraction": fraction})
    assert parse_source(str(one_file), SourceSettings(val_fraction=fraction)).fingerprint() == expected
    txt = sorted(p for p in text_folder.rglob("*.txt"))
    digests = {p.relative_to(text_folder).as_posix(): sha(p.read_bytes()) for p in txt}
    assert set(digests) == {"doc0.txt", "doc1.txt", "doc2.txt", "doc3.txt", "doc4.txt", "sub/deep.txt"}
    expected = canonical({"folder": digests, "val_fraction": fraction})
    assert parse_source(str(text_folder), SourceSettings(val_fraction=fraction)).fingerprint() == expected
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "a.txt").write_bytes(one_file.read_bytes())
    folder_of_one = parse_source(str(lone), SourceSettings(val_fraction=fraction))
    assert folder_of_one.fingerprint() == canonical({"file": sha(one_file.read_bytes()), "val_fraction": fraction})
    assert folder_of_one.description == f"text file {lone / 'a.txt'}"
    assert list(folder_of_one.documents()) == list(FileSource(lone / "a.txt", fraction).documents())


def test_hf_fingerprints_are_the_settings_formula(tmp_path, jsonl_corpus):
    hub = parse_source("hf:someone/ds", SourceSettings(hf_config="en", hf_split="test", hf_max_documents=5))
    expected = {"hf": "someone/ds", "config": "en", "split": "test", "field": "text", "max_documents": 5}
    assert hub.fingerprint() == canonical({**expected, "val_fraction": 0.1})
    local = parse_source(f"hf:{jsonl_corpus}", SourceSettings(hf_text_field="body", val_fraction=0.2))
    st = jsonl_corpus.stat()
    files = [[jsonl_corpus.name, st.st_size, st.st_mtime_ns]]
    expected = {"hf": files, "config": None, "split": "train", "field": "body", "max_documents": None}
    assert local.fingerprint() == canonical({**expected, "val_fraction": 0.2})


def test_the_token_cache_key_is_unchanged(tmp_path, text_folder):
    """A cache prepared before (key = hash of format, source fingerprint, tokenizer) is found again."""
    cfg = DataConfig(source=str(text_folder), cache_dir=str(tmp_path / "c"))
    data = prepare_data(cfg)
    digests = {p.relative_to(text_folder).as_posix(): sha(p.read_bytes()) for p in text_folder.rglob("*.txt")}
    fp = canonical({"folder": digests, "val_fraction": 0.1})
    key = canonical({"format": 1, "source": fp, "tokenizer": "byte-v1"})[:20]
    assert data.info["path"] == str(tmp_path / "c" / "tokens" / key)
    assert data.info["source_fingerprint"] == fp
    meta = (tmp_path / "c" / "tokens" / key / "meta.json").read_text()
    assert meta == json.dumps({k: v for k, v in data.info.items() if k != "path"}, indent=1, sort_keys=True) + "\n"


def test_shards_source_dispatches_to_the_shards(tmp_path, text_folder):
    from hyperconn.data import prepare_shards

    text = DataConfig(source=str(text_folder), cache_dir=str(tmp_path / "c"))
    index = prepare_shards(text, tmp_path / "sh", shard_chars=2000)
    source = parse_source(f"shards:{tmp_path / 'sh'}")
    source.validate()
    assert source.fingerprint() == index["source_fingerprint"] == text.parsed_source().fingerprint()
    shards = prepare_data(DataConfig(source=str(source), cache_dir=str(tmp_path / "c")))
    cached = prepare_data(text)
    assert shards.info["n_shards"] == len(index["shards"]) > 1
    assert np.array_equal(np.asarray(shards.train[:]), np.asarray(cached.train))
    assert not DataConfig(source=str(source)).rank0_builds_cache
    with pytest.raises(ValueError, match="already shards"):
        prepare_shards(DataConfig(source=str(source)), tmp_path / "again")


def test_a_table_file_read_as_raw_text_warns_once_naming_the_hf_route(tmp_path, one_file):
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n" + "".join(f"{i},{make_text(i, 1).strip()}\n" for i in range(20)), encoding="utf-8")
    source = parse_source(str(path))
    assert type(source) is FileSource  # still trained as raw text, as before
    with pytest.warns(UserWarning, match="trained as raw text") as record:
        DataConfig(source=str(path)).validate()
    assert len(record) == 1
    message = str(record[0].message)
    hf_spelling = f"hf:{path}"
    assert f"source='{hf_spelling}'" in message and f"--set data.source={hf_spelling}" in message
    assert message.startswith(f"source={str(path)!r}:")  # the file is named
    suggested = parse_source(hf_spelling)  # the spelling it names reads the same file as a dataset
    assert type(suggested) is HFSource and suggested.local == path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DataConfig(source=str(path)).validate()  # once per file: no second warning
        parse_source(str(one_file)).validate()  # a .txt file: no warning
    with pytest.warns(UserWarning, match=r"\.jsonl file given as a plain path"):
        (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
        parse_source(str(tmp_path / "rows.jsonl")).validate()
