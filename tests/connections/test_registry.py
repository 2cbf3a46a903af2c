"""Your own kind: register_connection, entry points (group hyperconn.connections), import paths."""

import sys
import textwrap

import pytest
import torch

import hyperconn
from hyperconn.connections import registry

PACKAGE = textwrap.dedent('''
    import torch
    import hyperconn


    class Flip(hyperconn.CoefficientConnection):
        """H_res = I with streams 0 and 1 swapped by a learned amount (a toy kind)."""

        kind = "{kind}"
        invariants = ("rows_sum_to_one", "columns_sum_to_one")

        def __init__(self, num_streams, dim, layer_index=0, eps=1e-6):
            super().__init__(num_streams, dim, layer_index, eps)
            self.reset_parameters()

        def res_groups(self):
            return (1,)

        def res_bias(self):
            return torch.zeros(1)

        def res_matrix(self, coefs):
            t = torch.sigmoid(coefs[0])[..., None]  # (..., 1, 1)
            n = self.num_streams
            eye = torch.eye(n, dtype=t.dtype, device=t.device)
            swap = eye[:, [1, 0, *range(2, n)]]
            return (1 - t) * eye + t * swap
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package ``userkinds`` on the path with an installed-style entry point ``flipep``."""
    pkg = tmp_path / "userkinds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "flip.py").write_text(PACKAGE.format(kind="flipep"))
    (pkg / "other.py").write_text(PACKAGE.format(kind="flippath"))
    dist = tmp_path / "userkinds-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userkinds\nVersion: 0.3\n")
    (dist / "top_level.txt").write_text("userkinds\n")
    (dist / "entry_points.txt").write_text("[hyperconn.connections]\nflipep = userkinds.flip:Flip\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("flipep", "flippath"):
        registry._REGISTRY.pop(name, None)
    for mod in [m for m in sys.modules if m.startswith("userkinds")]:
        del sys.modules[mod]


def test_an_entry_point_kind_is_found_by_name_without_importing_it(user_package):
    assert "userkinds.flip" not in sys.modules
    assert "flipep" in hyperconn.available_connections()
    conn = hyperconn.make_connection("flipep", 3, 8)
    assert type(conn).__module__ == "userkinds.flip" and conn.exact_kind
    assert hyperconn.connections.kind_spelling("flipep") == "flipep"
    origin = hyperconn.connections.connection_origin("flipep")
    assert origin == {"kind": "flipep", "import_path": "userkinds.flip:Flip", "distribution": "userkinds",
                      "version": "0.3"}


def test_an_import_path_resolves_and_records_itself(user_package):
    cls = hyperconn.connections.connection_class("userkinds.other:Flip")
    assert cls.kind == "flippath"
    assert hyperconn.connections.kind_spelling("flippath") == "userkinds.other:Flip"
    from hyperconn.model import ConnectionConfig

    cfg = ConnectionConfig("flippath", 4).validate()
    assert cfg.kind == "userkinds.other:Flip"  # what a run's config.yaml records


def test_register_connection_and_refusals(user_package):
    from userkinds.other import Flip

    assert hyperconn.register_connection(Flip) is Flip
    assert hyperconn.register_connection(Flip) is Flip  # twice: a no-op
    conn = hyperconn.make_connection("flippath", 4, 8)
    x = torch.randn(2, 4, 8)
    assert conn(x, torch.tanh).shape == x.shape

    class Other(Flip):
        pass

    with pytest.raises(ValueError, match="already userkinds.other.Flip"):
        hyperconn.register_connection(Other)

    class Bad(Flip):
        kind = "bad one"

    with pytest.raises(ValueError, match="kind must be a name"):
        hyperconn.register_connection(Bad)

    class Unknown(Flip):
        kind = "unknown_inv"
        invariants = ("doubly_magic",)

    with pytest.raises(ValueError, match="unknown invariant 'doubly_magic'"):
        hyperconn.register_connection(Unknown)
    with pytest.raises(ValueError, match="not a hyperconn.HyperConnection subclass"):
        hyperconn.register_connection(torch.nn.Linear)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nosuchkind", "unknown connection kind 'nosuchkind'; choose one of residual, hc"),
        ("nosuch.module:Cls", "connection kind 'nosuch.module:Cls' cannot be imported .*No module named 'nosuch'"),
        ("torch.nn:Linear", "is not a hyperconn.HyperConnection subclass"),
        ("userkinds.flip:Nope", "cannot be imported .*AttributeError"),
        ("module:", "an import path is 'package.module:ClassName'"),
    ],
)
def test_unknown_and_unimportable_kinds_are_refused_in_one_line(user_package, kind, message):
    with pytest.raises(ValueError, match=message) as err:
        hyperconn.make_connection(kind, 4, 8)
    assert "\n" not in str(err.value)


def test_swapped_arguments_warn_and_the_usual_order_does_not(recwarn):
    with pytest.warns(UserWarning, match="num_streams=64 > dim=4.*swap"):
        hyperconn.make_connection("hc", 64, 4)
    hyperconn.make_connection("hc", 4, 64)
    hyperconn.make_connection("hc", 16, 8)  # up to 16 streams never warns
    assert not [w for w in recwarn if "swap" in str(w.message)]
