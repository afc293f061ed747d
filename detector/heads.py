"""The fully connected layers on pooled conv5 features: fc6, fc7 and a (K+1)-way classifier."""
from __future__ import annotations

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
