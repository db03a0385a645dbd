"""The training recipe's settings, in one place: `python -m src.train` takes its defaults from here, and both
notebooks' settings cells read them. Change a value here and every way of training follows.

    from src.recipe import SCRATCH, TRANSFER, recipe_for, warmup_epochs
    SCRATCH.lr, TRANSFER.epochs, recipe_for("efficientnet_lite0").weight_decay
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How one kind of model is trained. Every value is what the project measured or chose, with its reason."""

    epochs: int  # passes over the training split
    lr: float  # AdamW's learning rate at the end of the warm-up (the head's, when a backbone is fine-tuned)
    dropout: float  # fraction of the pooled features zeroed in training, before the classifier
    optimizer: str = "AdamW"  # decoupled weight decay: the decay does not depend on the gradient's scale
    weight_decay: float = 0.05  # AdamW shrinks each weight by lr * weight_decay of itself per step
    momentum: float = 0.9  # SGD only
    scheduler: str = "cosine"  # linear warm-up (warmup_epochs), then a cosine down to 0 at the last epoch
    label_smoothing: float = 0.1  # target 0.9 + 0.1/N on the true class, 0.1/N on the others: less over-confident
    batch_size: int = 64  # photos per gradient step
    backbone_lr_factor: float = 0.1  # fine-tuning: pretrained layers learn at a tenth of the head's rate


# From scratch needs many epochs: the best landmark runs took 60-100. Dropout 0.5: a few thousand photos for 2.8M
# parameters overfit quickly.
SCRATCH = Recipe(epochs=80, lr=2e-3, dropout=0.5)
# A pretrained backbone needs few epochs and a gentler rate; its pooled features are already good, so less dropout.
TRANSFER = Recipe(epochs=15, lr=1e-3, dropout=0.2)
# The optional second stage of transfer learning: the last stages unfrozen, from the trained head, at a tenth of the
# rate, so the pretrained features are adjusted and not overwritten.
FINE_TUNING = Recipe(epochs=5, lr=1e-4, dropout=0.2)


def recipe_for(model_name: str) -> Recipe:
    """SCRATCH for "scratch", TRANSFER for any pretrained backbone (efficientnet_lite0, ...)."""
    return SCRATCH if model_name == "scratch" else TRANSFER


def warmup_epochs(n_epochs: int) -> int:
    """Epochs of linear learning-rate warm-up: about 5% of the run, at least 1, and none for a 1-epoch run."""
    return min(max(1, n_epochs // 20), n_epochs - 1)
