"""Class activation maps (Zhou et al. 2016): where the model looked, exactly and without gradients.

Both kinds of model end in global average pooling followed by one linear layer, so a class's logit is the average over
the last feature map's positions of one number per position, plus the class's bias:

    logit_c = mean_(y,x) sum_k W[c, k] * F[k, y, x] + b[c] = mean_(y,x) evidence_c[y, x] + b[c]

evidence_c is the class activation map: how much each region of the crop raised the class's score. For these models
Grad-CAM on the pooled layer computes the same map up to a constant factor, with one forward pass and a backward one;
here it is one weighted sum of the feature maps the forward pass already computed.

    cam_parts(model)                             (features, classifier) with classifier(features(x).mean((2, 3)))
                                                 == model(x)
    class_evidence, class_activation_maps        [B,K,h,w] feature maps -> [B,h,w] maps of the chosen classes
    to_photo                                     [B,h,w] maps of the crop -> [B,H,W] heat maps of the photo
    ClassActivationMapper                        all of it for a crop, in one scriptable module

Everything but cam_parts compiles with torch.jit.script, to run inside the exported predictor (src/predictor.py).
Its `explain` method is, with `self.cam = ClassActivationMapper(*cam_parts(self.model), image_size, resize_size,
self.max_aspect)` set in Predictor.__init__ after self.model:

    @torch.jit.export
    def explain(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        '''x: [B,3,H,W] uint8 0-255 or float 0-1 -> (probabilities [B, classes], scores [B], heatmaps [B,H,W] float32
        in [0, 1]: where the model looked for each photo's most likely class, 0 outside the central crop it sees).'''
        with torch.no_grad():
            logits, heatmaps = self.cam(self.preprocess(x), x.shape[-2], x.shape[-1])
            probabilities, scores = calibrated(logits, self.temperature, self.score_kind)  # as classify does
        return probabilities, scores, heatmaps

The network runs once: cam's logits are the model's (classifier(pooled features) == model(crop)), and cam's modules
are the model's own, saved once in the file. cam_parts raises ValueError for a model it cannot split (not one this
project trains): export such a model without explain.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.efficientnet import EfficientNet

from src.crop import crop_box
from src.model import MyModel
from src.transfer import TransferModel


# ----------------------------------------------------------------------------------------------------------------------
# The model in two parts: what computes the last feature maps, and the linear layer after their global average


class EfficientNetFeatures(nn.Module):
    """A timm EfficientNet up to its last feature map: [B, 3, H, W] -> [B, num_features, H/32, W/32] (after bn2's
    ReLU6), the map its head averages. The network's own modules, not a copy."""

    def __init__(self, network: EfficientNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(x)


def _one_linear(layers: list[nn.Module]) -> nn.Linear | None:
    """The last of `layers` if it is an nn.Linear and every other one is a dropout or nn.Identity (a no-op in eval
    mode), else None."""
    *before, last = layers or [None]
    if isinstance(last, nn.Linear) and all(isinstance(layer, (nn.Dropout, nn.Identity)) for layer in before):
        return last
    return None


def _average_pools(network: EfficientNet) -> bool:
    """Whether a timm EfficientNet's head is global average pooling (flattened), then dropout, then its classifier."""
    pool = network.global_pool
    return pool.pool_type == "avg" and isinstance(pool.flatten, nn.Flatten)


def cam_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(features, classifier) of a model that ends in global average pooling and one linear layer: in eval mode
    classifier(features(x).mean((2, 3))) equals model(x) [B, classes], features(x) being the last feature maps
    [B, K, h, w] and classifier.weight [classes, K]. Both are the model's own modules (shared, not copied).

    Knows MyModel, TransferModel (src/transfer.py: a timm EfficientNet-Lite backbone and a dropout + linear head),
    hence whatever src.transfer.build_model returns, and timm's EfficientNet itself (load_imagenet_model). Raises
    ValueError for any other model: its class activation map would not be its exact score.
    """
    if isinstance(model, MyModel):
        pool, flatten, *rest = list(model.head) + [None, None]  # padded: a short head fails the checks below
        linear = _one_linear([layer for layer in rest if layer is not None])
        global_average = isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
        if global_average and isinstance(flatten, nn.Flatten) and linear:
            return nn.Sequential(model.stem, model.stages), linear
    elif isinstance(model, TransferModel) and isinstance(model.backbone, EfficientNet):
        linear = _one_linear(list(model.head))
        if _average_pools(model.backbone) and isinstance(model.backbone.classifier, nn.Identity) and linear:
            return EfficientNetFeatures(model.backbone), linear
    elif isinstance(model, EfficientNet) and _average_pools(model) and isinstance(model.classifier, nn.Linear):
        return EfficientNetFeatures(model), model.classifier
    raise ValueError(
        f"{type(model).__name__} does not end in global average pooling and one linear layer, so it has no exact class "
        f"activation map: cam_parts knows MyModel, TransferModel and timm's EfficientNet"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Class activation maps at the feature maps' resolution


def class_evidence(feature_maps: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """feature_maps [B,K,h,w], the classifier's weight [C,K] and one class per image [B] (int64) -> [B,h,w]: for image
    b, sum_k weight[classes[b], k] * feature_maps[b, k]. Its mean over (h, w) plus the class's bias is the logit."""
    batch, channels, height, width = feature_maps.shape
    chosen = weight[classes].to(feature_maps.dtype).unsqueeze(1)  # [B,1,K]
    return torch.bmm(chosen, feature_maps.reshape(batch, channels, height * width)).view(batch, height, width)


def class_activation_maps(feature_maps: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The class activation map [B,h,w] in [0, 1] of each image's class (arguments as class_evidence).

    class_evidence without the bias (a constant over the map: it says nothing about where), negative values set to
    0 (what speaks against the class, as in Grad-CAM), divided by each image's largest value: the most telling
    region is 1; a map with nothing above 0 stays all 0.
    """
    maps = class_evidence(feature_maps, weight, classes).clamp_min(0)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# From the central crop back to the photo


def _interpolation_weights(pixels: int, start: float, end: float, cells: int, like: torch.Tensor) -> torch.Tensor:
    """[pixels, cells]: the bilinear weights of each photo row (or column) on `cells` map cells that tile [start, end)
    evenly, cell i centred at start + (i + 0.5) * (end - start) / cells; beyond the first and last centres a pixel
    takes that cell's value (as F.interpolate with align_corners=False does). Rows whose centre lies outside
    [start, end) weigh nothing: they were not in the crop."""
    centres = torch.arange(pixels, dtype=like.dtype, device=like.device) + 0.5
    position = ((centres - start) * (cells / (end - start)) - 0.5).clamp(0.0, float(cells - 1))  # in cells
    cell = torch.arange(cells, dtype=like.dtype, device=like.device)
    weights = (1.0 - (position.unsqueeze(1) - cell.unsqueeze(0)).abs()).clamp_min(0.0)  # the hat function: bilinear
    inside = (centres >= start) & (centres < end)
    return weights * inside.unsqueeze(1).to(like.dtype)


def to_photo(
    maps: torch.Tensor, photo_height: int, photo_width: int, resize_size: int, image_size: int, max_aspect: int
) -> torch.Tensor:
    """Maps [B,h,w] of the Predictor's central crop -> [B, photo_height, photo_width] on the photo it came from.

    The crop covers crop_box(photo_height, photo_width, resize_size, image_size, max_aspect) of the photo; each photo
    pixel whose centre lies in it takes the map's bilinear interpolation at that point (align_corners=False, as
    F.interpolate), every other pixel 0. Values stay within the maps' range. Separable: two small matrix products,
    [H,h] @ [B,h,w] @ [w,W], no [B,H,W]-sized intermediate.
    """
    top, left, bottom, right = crop_box(photo_height, photo_width, resize_size, image_size, max_aspect)
    rows = _interpolation_weights(photo_height, top, bottom, maps.shape[1], maps)
    columns = _interpolation_weights(photo_width, left, right, maps.shape[2], maps)
    return torch.matmul(torch.matmul(rows, maps), columns.t())


# ----------------------------------------------------------------------------------------------------------------------
# All of it, for the exported predictor


class ClassActivationMapper(nn.Module):
    """A model's (features, classifier) (cam_parts) and the Predictor's crop settings: the preprocessed crop of a photo
    -> (logits, heat maps of the photo). Scriptable; see the module docstring for the Predictor's explain method."""

    def __init__(
        self, features: nn.Module, classifier: nn.Linear, image_size: int, resize_size: int, max_aspect: int
    ) -> None:
        """image_size, resize_size, max_aspect: the Predictor's (the crop side, the shorter side before the crop, the
        longest aspect ratio kept)."""
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.image_size = image_size
        self.resize_size = resize_size
        self.max_aspect = max_aspect

    def forward(self, crop: torch.Tensor, photo_height: int, photo_width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """crop [B,3,S,S], normalized, of photos photo_height x photo_width -> (logits [B, classes]: the model's,
        heatmaps [B, photo_height, photo_width] in [0, 1]: each photo's class activation map for its highest logit,
        to_photo). The photo pixel nearest the peak cell's centre is at most half a pixel off it in each direction,
        so the heat map's maximum is 1 less at most about 1 / (the cell's side in photo pixels): 0.985 when a
        7 x 7 map covers 466 x 466 pixels of a 533 x 800 photo."""
        logits, maps = self.crop_maps(crop)
        return logits, to_photo(maps, photo_height, photo_width, self.resize_size, self.image_size, self.max_aspect)

    @torch.jit.export
    def crop_maps(self, crop: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """crop [B,3,S,S], normalized -> (logits [B, classes], maps [B,h,w] in [0, 1]: class_activation_maps of each
        crop's highest logit, at the last feature map's resolution; cell (i, j) covers the crop's [i, i + 1) * S / h
        rows and [j, j + 1) * S / w columns). The ONNX file outputs these maps (src/onnx_export.py)."""
        feature_maps = self.features(crop)
        # the model's own pooling (adaptive average pool + flatten), not .mean: logits equal to the model's, to the bit
        logits = self.classifier(F.adaptive_avg_pool2d(feature_maps, 1).flatten(1))
        return logits, class_activation_maps(feature_maps, self.classifier.weight, logits.argmax(dim=1))

