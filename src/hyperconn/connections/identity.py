"""Identity mixing (iHC): ``H_res = I`` exactly, with mHC's dynamic ``H_pre`` and ``H_post``.

The control for "does the residual matrix matter?": the same width and depth connections as mHC
and sHC (the shared coefficient machinery, :class:`~hyperconn.connections.base.CoefficientConnection`)
with no residual mixing at all (an ablation in the mHC paper; "iHC" in Chimera)::

    x~     = RMSNorm(flatten(x))                     over n C features
    H_pre  = sigmoid(s_pre  (x~ W)_pre  + b_pre)      (n)
    H_post = 2 sigmoid(s_post (x~ W)_post + b_post)   (n)
    x'_j   = x_j + H_post[j] F(sum_i H_pre[i] x_i)    (H_res = I)

``W`` (n C, 2n) is zero at init and the biases are ``+1`` at stream ``layer_index mod n``, ``-1``
elsewhere, as for mHC. There are no ``H_res`` parameters and no ``H_res`` is computed: the
streams pass through and only ``u = H_pre x`` and the depth step touch them.
"""

from __future__ import annotations

from .base import CoefficientConnection


class Identity(CoefficientConnection):
    kind = "identity"
    invariants = ("identity",)

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend, mix_streams=False)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr().replace(", mix_streams=False", "")
