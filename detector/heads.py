"""The fully connected layers on pooled conv5 features: fc6, fc7 and a (K+1)-way classifier."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

FEATURE_LAYERS = ("pool5", "fc6", "fc7")


class FCHead(nn.Module):
    """fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> cls_score (K+1, background = 0).

    The paper's fc6/fc7 come pre-trained on ImageNet with the SPP layer in
    place; no such weights exist for the backbones here, so they start random
    and are learnt by fine-tuning. ``input_scale`` (a buffer, set from the
    training features before fine-tuning) brings pool5 values to unit
    standard deviation, so the same learning rate works for every backbone.
    """

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.fc6 = nn.Linear(in_dim, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("input_scale", torch.ones(()))
        # fc6/fc7 keep PyTorch's default (Kaiming-uniform) init: Caffe's std
        # 0.005 assumed ImageNet-trained layers around them and learns far
        # slower from scratch on unit-variance inputs.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)

    def fc7_features(self, pool5: Tensor) -> Tensor:
        x = self.dropout(torch.relu(self.fc6(pool5 * self.input_scale)))
        return self.dropout(torch.relu(self.fc7(x)))

    def forward(self, pool5: Tensor) -> Tensor:
        """Class logits [N, K+1] for pool5 vectors [N, D]."""
        return self.cls_score(self.fc7_features(pool5))

    @torch.inference_mode()
    def class_probabilities(self, pool5: Tensor) -> Tensor:
        """Softmax over the K+1 classes [N, K+1] (column 0: background), in eval mode."""
        was_training = self.training
        self.eval()
        probs = torch.softmax(self(pool5), dim=1)
        self.train(was_training)
        return probs

    @torch.inference_mode()
    def features(self, pool5: Tensor, layer: str) -> Tensor:
        """Features the SVMs read: ``pool5`` as given, or post-ReLU ``fc6``/``fc7`` (eval mode)."""
        if layer == "pool5":
            return pool5
        was_training = self.training
        self.eval()
        x = torch.relu(self.fc6(pool5 * self.input_scale))
        if layer == "fc7":
            x = torch.relu(self.fc7(x))
        elif layer != "fc6":
            raise ValueError(f"unknown feature layer {layer!r}; expected one of {FEATURE_LAYERS}")
        self.train(was_training)
        return x


def truncated_svd_linear(layer: nn.Linear, rank: int, input_scale: float = 1.0) -> nn.Module:
    """``layer`` (times ``input_scale`` on its input) as two layers through its top ``rank``
    singular vectors (Fast R-CNN, Sec. 3.1): W ~ U_r S_r V_r^T, x -> U_r (S_r V_r^T x) + b.

    Returns the layer itself (with the scale folded in) when ``rank`` saves no
    multiply-adds, i.e. when rank * (in + out) >= in * out.
    """
    weight = layer.weight.detach() * input_scale
    out_dim, in_dim = weight.shape
    if rank * (in_dim + out_dim) >= in_dim * out_dim:
        folded = nn.Linear(in_dim, out_dim)
        folded.weight.data.copy_(weight)
        folded.bias.data.copy_(layer.bias.detach())
        return folded
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    first = nn.Linear(in_dim, rank, bias=False)
    second = nn.Linear(rank, out_dim)
    first.weight.data.copy_((s[:rank, None] * vh[:rank]).float())
    second.weight.data.copy_(u[:, :rank].float())
    second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def compress_head(head: FCHead, method: str, rank: int = 256) -> FCHead:
    """A test-time copy of ``head`` with cheaper fc6/fc7 (``head`` is left as it is).

    Args:
        method: "none" (``head`` itself), "svd" (:func:`truncated_svd_linear`
            on fc6 and fc7, ``input_scale`` folded into fc6), "int8" (dynamic
            int8 quantisation of fc6 and fc7: int8 weights, activations
            quantised per batch; PyTorch's fbgemm/x86 kernels) or "svd_int8".
        rank: singular values kept per layer by "svd".
    Returns:
        an FCHead in eval mode whose :meth:`FCHead.features` approximates the
        original's; the classifier layer (``cls_score``, training only) is kept.
    """
    if method == "none":
        return head
    if method not in ("svd", "int8", "svd_int8"):
        raise ValueError(f"unknown fc compression {method!r}; expected none, svd, int8 or svd_int8")
    small = copy.deepcopy(head).eval()
    if method in ("svd", "svd_int8"):
        small.fc6 = truncated_svd_linear(head.fc6, rank, float(head.input_scale))
        small.fc7 = truncated_svd_linear(head.fc7, rank)
        small.input_scale.fill_(1.0)
    if method in ("int8", "svd_int8"):
        with warnings.catch_warnings():  # eager-mode quantisation's deprecation notice (torchao)
            warnings.simplefilter("ignore")
            for name in ("fc6", "fc7"):
                setattr(small, name, torch.ao.quantization.quantize_dynamic(
                    nn.Sequential(getattr(small, name)), {nn.Linear}, dtype=torch.qint8))
    return small
