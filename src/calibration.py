"""When the model does not know: calibrated probabilities and a score that says "none of these classes".

    calibration = calibrate(model, loaders["valid"])  # temperature, score kind, threshold: stored in the exported file
    probabilities, scores = calibrated(logits, calibration.temperature, calibration.score_kind)

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides the logits by one number T,
fitted on the validation split to minimise the negative log-likelihood: the ranking of the classes, hence the accuracy,
is unchanged, but a 0.8 then means right about 80% of the time. A photo whose score is below the threshold is "none
of the known classes"; the threshold accepts KNOWN_SHARE (95%) of the validation photos. bench/unknown.py measures
both scores on held-out Fashion-MNIST classes (README, Results) and chose DEFAULT_SCORE.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from src.checks import error_line
from src.data import get_class_names, get_data_loaders
from src.helpers import DataError

SCORE_KINDS = ("max_probability", "energy")
# bench/unknown.py, seeds 42 and 1 (AUROC known vs unknown Fashion-MNIST classes; unknown images let through at the 95%
# threshold): energy 0.793 / 0.825, 72.0% / 61.1%; max probability 0.762 / 0.763, 79.2% / 73.7%
DEFAULT_SCORE = "energy"
KNOWN_SHARE = 0.95  # the threshold accepts this share of the validation photos
ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)  # the fitted temperature stays in this range (a validation set the model gets all
# right would otherwise push T towards 0, and one it gets all wrong towards infinity)


def calibrated(logits: torch.Tensor, temperature: float, score_kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities softmax(logits / temperature) [B, C], scores [B]; a higher score: more like the known classes).

    score_kind "max_probability": the largest calibrated probability; "energy": temperature * logsumexp(logits /
    temperature), the negative of Liu et al.'s energy (2020, "Energy-based Out-of-distribution Detection"). NaN logits
    give NaN probabilities and a NaN score, which no threshold accepts. TorchScript compiles this function into the
    exported file (src/predictor.py).
    """
    scaled = logits / temperature
    probabilities = F.softmax(scaled, dim=1)
    if score_kind == "energy":
        return probabilities, temperature * torch.logsumexp(scaled, dim=1)
    return probabilities, probabilities.max(dim=1).values


@torch.no_grad()
def collect_logits(model: nn.Module, loader: DataLoader, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C] float32 on the CPU, labels [N] int64) of the model in eval mode over the loader's (images,
    labels) batches, on `device` (default: where the model's parameters are). Every submodule's mode is restored."""
    device = device or next(model.parameters()).device
    modes, logits, labels = {module: module.training for module in model.modules()}, [], []
    model.eval()
    try:
        for images, batch_labels in loader:
            logits.append(model(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(batch_labels))
    finally:
        for module, training in modes.items():  # each one as it was (a frozen BatchNorm may stay in eval mode)
            module.training = training
    if not logits:
        raise ValueError("the calibration loader gives no images: pass the validation loader (loaders['valid'])")
    return torch.cat(logits), torch.cat(labels).long()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T in TEMPERATURE_RANGE minimising the mean negative log-likelihood of softmax(logits / T).

    The loss is convex in 1/T, so it has one minimum in log T: golden-section search finds it to 1e-6 (relative).
    """
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = nll(a), nll(b)
    while high - low > 1e-6:
        if loss_a <= loss_b:  # the minimum is in [low, b]
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = nll(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = nll(b)
    return math.exp((low + high) / 2)


def threshold_for(scores: torch.Tensor, share: float = KNOWN_SHARE) -> float:
    """The highest threshold that accepts (score >= threshold) at least `share` of the scores: the
    floor((1 - share) * N)-th smallest score (0-based)."""
    ordered = scores.double().sort().values
    return float(ordered[math.floor((1 - share) * len(ordered) + 1e-9)])


@dataclass(frozen=True)
class Calibration:
    """What an exported file stores to calibrate its probabilities and say "none of the known classes"."""

    temperature: float  # probabilities = softmax(logits / temperature)
    score_kind: str  # one of SCORE_KINDS
    threshold: float  # a score below it: none of the known classes
    images: int  # how many validation images these were fitted on


def check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError (one line) unless the logits can be calibrated: finite, labels of at least 2 of the classes."""
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise ValueError(f"the model gives NaN or infinite logits for {bad} of {len(logits)} calibration images: "
                         f"it cannot be calibrated; check its weights (a training run that diverged?)")  # fmt: skip
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"the calibration loader has labels outside 0..{logits.shape[1] - 1}: pass the validation "
                         f"loader of the data the model was trained on (loaders['valid'])")  # fmt: skip
    if len(labels.unique()) < 2:
        raise ValueError(f"the calibration loader has images of only 1 class ({len(labels)} images): calibration "
                         f"needs the validation split of every class (loaders['valid'])")  # fmt: skip


def calibrate(model: nn.Module, loader: DataLoader, score_kind: str = DEFAULT_SCORE, device=None) -> Calibration:
    """Fit the temperature on the loader's (normalized crops, labels), then the threshold of `score_kind` that accepts
    KNOWN_SHARE of those images. Raises ValueError (one line) for logits or labels that cannot be calibrated."""
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind must be one of {', '.join(SCORE_KINDS)}, got {score_kind!r}")
    logits, labels = collect_logits(model, loader, device)
    check_logits(logits, labels)
    temperature = fit_temperature(logits, labels)
    _, scores = calibrated(logits, temperature, score_kind)
    return Calibration(temperature, score_kind, threshold_for(scores), len(labels))


def validation_loader(record: dict) -> DataLoader | None:
    """The validation split of the run a `python -m src.train` record describes (its dataset, image size,
    normalization, seed and --limit), or None, with one line on stderr, when it cannot be read or has other classes."""
    args = record.get("args", {})
    try:
        loaders = get_data_loaders(
            batch_size=64, num_workers=0, limit=int(args.get("limit", -1)), dataset=record["dataset"],
            image_size=record["image_size"], normalization=(record["mean"], record["std"]),
            seed=int(args.get("seed", 42)), train_augment=False,
        )  # fmt: skip
    except (DataError, ValueError) as err:
        print(f"note: not calibrated: cannot read the validation split ({error_line(err)})", file=sys.stderr)
        return None
    if get_class_names(loaders) != record["class_names"]:
        print("note: not calibrated: the validation data has other classes than the run", file=sys.stderr)
        return None
    return loaders["valid"]


def describe_calibration(predictor: nn.Module) -> str:
    """One line on what an exported file (or a Predictor) says about calibration and unknown photos."""
    threshold, kind = getattr(predictor, "threshold", -math.inf), getattr(predictor, "score_kind", "")
    if not math.isfinite(threshold) or kind not in SCORE_KINDS:
        return "not calibrated: temperature 1, no 'unknown' threshold (every photo counts as one of the classes)"
    return (f"calibrated: temperature {predictor.temperature:.3f}; a photo whose {kind.replace('_', ' ')} score is "
            f"below {threshold:.4g} is none of the {len(predictor.class_names)} classes")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# How well calibrated: expected calibration error and the reliability diagram


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, torch.Tensor]:
    """Per confidence bin ((b/bins, (b+1)/bins], the first one from 0 included): "count" of images whose largest
    probability falls in it, their mean "confidence" and "accuracy" (0 where the bin is empty)."""
    confidence, predicted = probabilities.double().max(dim=1)
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    total_confidence = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, (predicted == labels).double())
    nonzero = count.clamp(min=1)
    return {"count": count, "confidence": total_confidence / nonzero, "accuracy": correct / nonzero}


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE in [0, 1]: sum over the confidence bins of (share of the images in the bin) * |accuracy - confidence|."""
    table = reliability(probabilities, labels, bins)
    return float((table["count"] / len(labels) * (table["accuracy"] - table["confidence"]).abs()).sum())


def plot_reliability(logits: torch.Tensor, labels: torch.Tensor, temperature: float, bins=ECE_BINS) -> plt.Figure:
    """Reliability diagrams before (T = 1) and after temperature scaling, side by side: per confidence bin, the
    accuracy as a bar against the diagonal of perfect calibration; each panel's title gives its ECE."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained", sharey=True)
    for ax, t, when in zip(axes, (1.0, temperature), ("before", "after")):
        probabilities = F.softmax(logits / t, dim=1)
        table = reliability(probabilities, labels, bins)
        filled = table["count"] > 0  # empty bins get no bar
        centres = ((torch.arange(bins)[filled] + 0.5) / bins).numpy()
        ax.bar(centres, table["accuracy"][filled].numpy(), width=1 / bins, edgecolor="black", label="accuracy in the bin")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ece = expected_calibration_error(probabilities, labels, bins)
        ax.set(title=f"{when} temperature scaling (T = {t:.2f}): ECE {100 * ece:.1f}%", xlim=(0, 1), ylim=(0, 1),
               xlabel="confidence (largest probability)", ylabel="accuracy")  # fmt: skip
        ax.legend(loc="upper left")
    return fig
