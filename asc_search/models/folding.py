"""What a model becomes in its deployed graph: every BatchNorm folded into the convolution before it.

The ONNX exporters (both torch's dynamo exporter with ``optimize=True`` and the TorchScript one in eval mode) fold a
``BatchNorm2d`` that follows a ``Conv2d`` into that convolution: its weight is rescaled per output channel and it
gains one bias per output channel; no BatchNormalization op is left. So the deployed graph stores, per layer, a
kernel (the conv / linear weight) and a bias (the layer's own, or the folded BatchNorm's shift), and torchinfo's
two parameters per BatchNorm channel (weight and bias, the DCASE count) become one bias per channel.

* :func:`conv_bn_pairs`: which BatchNorm follows which conv (the pattern the exporters, and torch's FX QAT, fuse):
  the two are adjacent children of the same ``nn.Sequential``;
* :func:`folded_counts`: (kernel elements, bias elements) of the deployed graph, from the model's modules.
"""

from __future__ import annotations

from torch import nn

__all__ = ["conv_bn_pairs", "folded_counts"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """Path of each convolution -> path of the BatchNorm right after it in the same ``nn.Sequential``."""
    pairs = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, conv), (b, bn) in zip(kids, kids[1:]):
                if isinstance(conv, _CONVS) and isinstance(bn, _NORMS):
                    prefix = f"{path}." if path else ""
                    pairs[prefix + a] = prefix + b
    return pairs


def folded_counts(model: nn.Module) -> tuple[int, int]:
    """``(n_kernel, n_bias)``: the weight elements of every conv / linear layer, and their bias elements after
    BatchNorm folding (one per output channel of a layer that has its own bias or a BatchNorm after it). A
    BatchNorm that follows no convolution stays an op of its own: its weight and bias count as bias elements (two
    per channel). Train-only modules are not the model's business: pass the model that is deployed."""
    pairs = conv_bn_pairs(model)
    folded = set(pairs.values())
    n_kernel = n_bias = 0
    for path, module in model.named_modules():
        if isinstance(module, (*_CONVS, nn.Linear)):
            n_kernel += module.weight.numel()
            if module.bias is not None or path in pairs:
                n_bias += module.weight.shape[0]
        elif isinstance(module, _NORMS) and path not in folded and module.affine:
            n_bias += 2 * module.num_features
    return n_kernel, n_bias
