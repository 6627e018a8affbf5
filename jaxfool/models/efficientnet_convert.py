"""EfficientNet-Lite weights: from the reference PyTorch state dict to this project's pytree.

BatchNorm (inference mode, epsilon 1e-3) is folded into the preceding convolution in float64
(``w * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``), PyTorch layouts
become HWIO / HWC / IO, and every shape is checked against :func:`param_shapes` of the
architecture (:mod:`jaxfool.models.efficientnet_lite`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxfool.errors import ClassifierError
from jaxfool.models.efficientnet_lite import BN_EPSILON, block_specs, param_shapes


def _fold_bn(sd: dict, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` of inference BatchNorm ``bn``, in float64."""
    gamma, beta, mean, var = (
        np.asarray(sd[f"{bn}.{n}"], np.float64) for n in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return scale, beta - mean * scale


def _conv_bn(sd: dict, conv: str, bn: str, layout: str) -> dict:
    w = np.asarray(sd[f"{conv}.weight"], np.float64)
    scale, shift = _fold_bn(sd, bn)
    if layout == "hwio":  # torch [O, I, kh, kw] -> [kh, kw, I, O]
        w = w.transpose(2, 3, 1, 0)
    elif layout == "depthwise":  # torch [C, 1, kh, kw] -> [kh, kw, C]
        w = w[:, 0].transpose(1, 2, 0)
    else:  # 1x1: torch [O, I, 1, 1] -> [I, O]
        w = w[:, :, 0, 0].T
    return {"kernel": (w * scale).astype(np.float32), "bias": shift.astype(np.float32)}


def convert_state_dict(sd: dict[str, np.ndarray], variant: str = "lite0") -> dict[str, Any]:
    """The reference port's state dict (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``,
    ...) -> this module's parameter pytree, BatchNorm folded. Raises ClassifierError on any
    missing, extra or misshapen tensor."""
    try:
        params: dict[str, Any] = {"stem": _conv_bn(sd, "_conv_stem", "_bn0", "hwio")}
        for i, b in enumerate(block_specs(variant)):
            pre, block = f"_blocks.{i}.", {}
            if b.expand != 1:
                block["expand"] = _conv_bn(sd, pre + "_expand_conv", pre + "_bn0", "1x1")
            block["depthwise"] = _conv_bn(sd, pre + "_depthwise_conv", pre + "_bn1", "depthwise")
            block["project"] = _conv_bn(sd, pre + "_project_conv", pre + "_bn2", "1x1")
            params[f"block{i}"] = block
        params["head"] = _conv_bn(sd, "_conv_head", "_bn1", "1x1")
        params["fc"] = {
            "kernel": np.asarray(sd["_fc.weight"], np.float32).T.copy(),
            "bias": np.asarray(sd["_fc.bias"], np.float32),
        }
    except KeyError as e:
        raise ClassifierError(f"EfficientNet-{variant} weights lack tensor {e.args[0]}") from None
    except (ValueError, IndexError) as e:
        raise ClassifierError(f"EfficientNet-{variant} weights do not fit the architecture: {e}") from None
    num_classes = params["fc"]["bias"].shape[0]
    _check_shapes(params, param_shapes(variant, num_classes), f"EfficientNet-{variant} weights")
    extra = sorted(set(sd) - _torch_keys(variant))
    if extra:
        raise ClassifierError(f"EfficientNet-{variant} weights have unexpected tensor {extra[0]} (wrong variant?)")
    return params


def _torch_keys(variant: str) -> set[str]:
    """Every tensor name the reference port's state dict has for ``variant``."""
    convs, bns = ["_conv_stem", "_conv_head"], ["_bn0", "_bn1"]
    for i, b in enumerate(block_specs(variant)):
        pre = f"_blocks.{i}."
        convs += [pre + "_depthwise_conv", pre + "_project_conv"]
        bns += [pre + "_bn1", pre + "_bn2"]
        if b.expand != 1:
            convs.append(pre + "_expand_conv")
            bns.append(pre + "_bn0")
    bn_fields = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return (
        {c + ".weight" for c in convs}
        | {f"{bn}.{f}" for bn in bns for f in bn_fields}
        | {"_fc.weight", "_fc.bias"}
    )


def _check_shapes(params: Any, shapes: Any, what: str) -> None:
    """Raises ClassifierError unless ``params`` has exactly the leaves and shapes of ``shapes``."""
    keystr = jax.tree_util.keystr
    want = {
        keystr(k): v
        for k, v in jax.tree_util.tree_leaves_with_path(shapes, is_leaf=lambda s: isinstance(s, tuple))
    }
    got = {keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for where in sorted(want.keys() | got.keys()):
        if want.get(where) != got.get(where):
            raise ClassifierError(
                f"{what}: parameter {where} has shape {got.get(where, 'missing')}, "
                f"the architecture needs {want.get(where, 'none')}"
            )
