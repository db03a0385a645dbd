"""When the model does not know: calibrated confidence and "none of these classes", measured on real data.

    python bench/unknown.py                                          # about 6 minutes on 2 CPU cores
    python bench/unknown.py --train-per-class 20 --epochs 1 --copies 5   # a smoke run: its figures mean nothing

1. Fashion-MNIST: MyModel learns 8 classes from scratch (a class-balanced subset, the recipe's AdamW, label smoothing
   and warm-up + cosine schedule); "Bag" and "Ankle boot" are held out as the unknown classes. The temperature is
   fitted on the validation split (src.calibration), then, for both scores (the largest calibrated probability, and
   the energy score T * logsumexp(logits / T)): AUROC known vs unknown on the test split, and the share of unknown
   and known test images accepted at the threshold that accepts 95% of the validation images; ECE (15 bins) of the
   known test images before and after temperature scaling.
2. Photos: a stand-in landmark model (no trained 50-landmark model exists here): EfficientNet-Lite0's frozen ImageNet
   backbone and a head trained on cached features of ../shared/data/landmark_samples (100 photos of one landmark,
   one photo each of 5 others, shown as random crops of copies), exported with calibration on a held-out 20%
   (export_predictor(..., calibration_loader=...)). Prints what the file says about that landmark's unseen test photos
   and about real photos of other things from scikit-image (a cat, coffee, an astronaut, a rocket, ...).
"""

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skimage_data  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from bench.common import SAMPLES, machine  # noqa: E402
from src.calibration import (  # noqa: E402
    SCORE_KINDS,
    calibrated,
    collect_logits,
    describe_calibration,
    expected_calibration_error,
    fit_temperature,
    threshold_for,
)
from src.data import base_dataset, get_data_loaders, get_datasets  # noqa: E402
from src.exported import load_predictor  # noqa: E402
from src.runtime import answer  # noqa: E402
from src.helpers import seed_everything  # noqa: E402
from src.images import open_photo  # noqa: E402
from src.optimization import get_loss, get_optimizer, get_scheduler  # noqa: E402
from src.predictor import export_predictor, export_settings  # noqa: E402
from src.recipe import SCRATCH, TRANSFER, warmup_epochs  # noqa: E402
from src.splits import balanced_subset  # noqa: E402
from src.train import optimize, train_head_on_features  # noqa: E402
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, build_model, cache_features, get_model_transfer_learning  # noqa: E402

UNKNOWN = (8, 9)  # Fashion-MNIST's "Bag" and "Ankle boot": the last two labels, so the known ones stay 0..7
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "hubble_deep_field", "immunohistochemistry", "retina",
          "coins", "moon", "brick", "grass", "gravel", "clock")  # scikit-image's real photos (no drawings)  # fmt: skip
LANDMARK = "00.Haleakala_National_Park"  # the sample landmark with many photos: 100 train/, 25 test/


def by_label(subset: Subset, labels: set[int], per_class: int, seed: int) -> Subset:
    """A class-balanced subset (at most per_class images of each label) of the subset's images with those labels."""
    targets = [int(t) for t in base_dataset(subset).targets]
    indices = [i for i in subset.indices if targets[i] in labels]
    return Subset(subset.dataset, balanced_subset(indices, targets, per_class * len(labels), seed))


def fashion_mnist(args: argparse.Namespace, folder: Path) -> None:
    """Part 1: train on 8 classes, measure calibration and both unknown scores on the 2 held-out ones."""
    splits = get_datasets("fashion-mnist", seed=args.seed)
    known = set(range(10)) - set(UNKNOWN)
    train = by_label(splits["train"], known, args.train_per_class, args.seed)
    valid = by_label(splits["valid"], known, args.valid_per_class, args.seed)
    test_known = by_label(splits["test"], known, args.test_per_class, args.seed)
    test_unknown = by_label(splits["test"], set(UNKNOWN), args.test_per_class, args.seed)
    batch = SCRATCH.batch_size
    loaders = {"train": DataLoader(train, batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(args.seed)),
               "valid": DataLoader(valid, 256)}  # fmt: skip
    model = build_model("scratch", len(known), 28)
    optimizer = get_optimizer(model, SCRATCH.optimizer, SCRATCH.lr, weight_decay=SCRATCH.weight_decay)
    scheduler = get_scheduler(optimizer, "cosine", n_epochs=args.epochs, warmup_epochs=warmup_epochs(args.epochs))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's line per epoch
        optimize(loaders, model, optimizer, get_loss(SCRATCH.label_smoothing), args.epochs, folder / "fashion.pt",
                 scheduler=scheduler, device=torch.device("cpu"))  # fmt: skip
    seconds = time.perf_counter() - start
    model.load_state_dict(torch.load(folder / "fashion.pt", map_location="cpu", weights_only=True))
    valid_logits, valid_labels = collect_logits(model, loaders["valid"])
    known_logits, known_labels = collect_logits(model, DataLoader(test_known, 256))
    unknown_logits, unknown_labels = collect_logits(model, DataLoader(test_unknown, 256))
    temperature = fit_temperature(valid_logits, valid_labels)

    names = base_dataset(splits["test"]).classes
    print(f"\n1. Fashion-MNIST: MyModel from scratch on {len(known)} classes; unknown: {', '.join(names[u] for u in UNKNOWN)}")
    print(f"   {len(train)} training / {len(valid)} validation images; {len(test_known)} known + {len(test_unknown)} "
          f"unknown test images; {args.epochs} epochs in {seconds:.0f} s ({args.epochs * len(train) / seconds:.0f} img/s)")  # fmt: skip
    accuracy = (known_logits.argmax(dim=1) == known_labels).float().mean()
    print(f"   test accuracy on the known classes: {100 * accuracy:.2f}%; fitted temperature T = {temperature:.3f}")
    for t, when in ((1.0, "before"), (temperature, "after ")):
        probabilities = F.softmax(known_logits / t, dim=1)
        nll = F.cross_entropy(known_logits / t, known_labels)
        print(f"   ECE (15 bins), known test images, {when} temperature scaling: "
              f"{100 * expected_calibration_error(probabilities, known_labels):.2f}%  (NLL {nll:.4f})")  # fmt: skip
    truth = np.r_[np.ones(len(known_logits)), np.zeros(len(unknown_logits))]
    print(f"   {'score':<16} {'AUROC (T = 1)':>14} {'AUROC (fitted T)':>17} {'threshold':>10} "
          f"{'unknown accepted':>17} {'known accepted':>15}")  # fmt: skip
    for kind in SCORE_KINDS:
        auroc = {}
        for t in (1.0, temperature):
            scores = torch.cat([calibrated(known_logits, t, kind)[1], calibrated(unknown_logits, t, kind)[1]])
            auroc[t] = roc_auc_score(truth, scores.numpy())
        threshold = threshold_for(calibrated(valid_logits, temperature, kind)[1])
        unknown_in = (calibrated(unknown_logits, temperature, kind)[1] >= threshold).float().mean()
        known_in = (calibrated(known_logits, temperature, kind)[1] >= threshold).float().mean()
        print(f"   {kind.replace('_', ' '):<16} {auroc[1.0]:>14.4f} {auroc[temperature]:>17.4f} {threshold:>10.4f} "
              f"{100 * unknown_in:>16.1f}% {100 * known_in:>14.1f}%")  # fmt: skip
        accepted = calibrated(unknown_logits, temperature, kind)[1] >= threshold
        shares = [f"{names[u]} {100 * accepted[unknown_labels == u].float().mean():.1f}%" for u in UNKNOWN]
        print(f"   {'':<16} unknown accepted, by class: {', '.join(shares)}")


def sample_folder(root: Path, copies: int) -> Path:
    """An ImageFolder of the sample photos: the landmark's own train/ and test/; each other landmark's only photo
    `copies` times in train/ (the split puts 20% of the copies into validation) and once in test/."""
    for photo in sorted(SAMPLES.rglob("*.jpg")):
        split, name = photo.parent.parent.name, photo.parent.name
        for i in range(1 if name == LANDMARK else copies):
            for target_split in ((split,) if name == LANDMARK else ("train", "test") if i == 0 else ("train",)):
                target = root / target_split / name / f"{i}_{photo.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(photo)
    return root


def photos(args: argparse.Namespace, folder: Path) -> None:
    """Part 2: a stand-in landmark model, exported with calibration; what it says about landmark and other photos."""
    if not SAMPLES.is_dir():
        print(f"\n2. Photos: skipped ({SAMPLES} is not on this machine)")
        return
    os.environ["LANDMARK_DATA"] = str(sample_folder(folder / "samples", args.copies))
    loaders = get_data_loaders(batch_size=32, num_workers=0, image_size=224, normalization=(PRETRAINED_MEAN, PRETRAINED_STD),
                               seed=args.seed)  # fmt: skip
    classes = base_dataset(loaders["train"].dataset).classes
    model = get_model_transfer_learning("efficientnet_lite0", n_classes=len(classes), fine_tune="none")
    features = cache_features(model, loaders, train_passes=args.photo_passes, device=torch.device("cpu"))
    optimizer = get_optimizer(model, "AdamW", TRANSFER.lr, weight_decay=TRANSFER.weight_decay)
    scheduler = get_scheduler(optimizer, "cosine", n_epochs=args.head_epochs, warmup_epochs=1)
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's line per epoch
        train_head_on_features(model, features, optimizer, get_loss(TRANSFER.label_smoothing), args.head_epochs,
                               folder / "photos.pt", scheduler=scheduler, device=torch.device("cpu"))  # fmt: skip
    model.load_state_dict(torch.load(folder / "photos.pt", map_location="cpu", weights_only=True))
    path = folder / "stand_in_exported.pt"
    export_predictor(model, path=path, calibration_loader=loaders["valid"], **export_settings(loaders["test"]))
    predictor = load_predictor(path)

    print(f"\n2. Photos. The model: NOT the 50-landmark model (none is trained here) but a stand-in: EfficientNet-Lite0 "
          f"(frozen ImageNet backbone) + a {len(classes)}-class head trained on cached features of "
          f"{len(loaders['train'].dataset)} training crops ({args.photo_passes} random views each) of the "
          f"{len(list(SAMPLES.rglob('*.jpg')))} sample photos: {classes[0]} has 100 photos, the 5 others one photo "
          f"each, copied {args.copies} times. Calibrated on the held-out {len(loaders['valid'].dataset)} "
          f"(20 of the landmark's photos and 2 copies of each other photo, so its classes are thinly tested).")  # fmt: skip
    print(f"   the file: {describe_calibration(predictor)}")
    landmark_photos = sorted((SAMPLES / "test" / LANDMARK).glob("*.jpg"))
    answers = [answer(predictor, open_photo(photo)) for photo in landmark_photos]
    passed = sum(a["known"] for a in answers)
    right = sum(a["predictions"][0]["name"] == predictor.class_names[0] for a in answers)
    print(f"   unseen test photos of {predictor.class_names[0]}: {passed}/{len(answers)} pass the threshold, "
          f"{right}/{len(answers)} named correctly")  # fmt: skip
    valid_logits, _ = collect_logits(model.head, features["valid"])  # the file's temperature, both kinds of score
    thresholds = {kind: threshold_for(calibrated(valid_logits, predictor.temperature, kind)[1]) for kind in SCORE_KINDS}
    passed = dict.fromkeys(SCORE_KINDS, 0)
    print(f"   {'':<36} {'max probability':>16} {'energy':>16}  the file's answer (energy): best guess")
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            logits = predictor.logits(predictor.preprocess(pixels))
        cells = []
        for kind in SCORE_KINDS:
            score = float(calibrated(logits, predictor.temperature, kind)[1])
            passed[kind] += score >= thresholds[kind]
            cells.append(f"{score:7.3f} {'pass' if score >= thresholds[kind] else 'no':>4}")
        result = answer(predictor, image)
        best = result["predictions"][0]
        print(f"   skimage.data.{name + '()':<23} {cells[0]:>16} {cells[1]:>16}  "
              f"{'known' if result['known'] else 'UNKNOWN'}: {best['name']} ({100 * best['probability']:.0f}%)")  # fmt: skip
    print("   thresholds (95% of validation): " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in thresholds.items()))
    print("   non-landmark photos that pass the threshold: "
          + ", ".join(f"{k.replace('_', ' ')} {v}/{len(PHOTOS)}" for k, v in passed.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-per-class", type=int, default=600, help="Fashion-MNIST training images per class")
    parser.add_argument("--valid-per-class", type=int, default=200, help="validation images per class (calibration)")
    parser.add_argument("--test-per-class", type=int, default=1000, help="test images per class (1,000: all)")
    parser.add_argument("--epochs", type=int, default=6, help="MyModel's epochs on Fashion-MNIST")
    parser.add_argument("--copies", type=int, default=10, help="copies of each one-photo landmark (part 2)")
    parser.add_argument("--photo-passes", type=int, default=3, help="random views of each training photo (part 2)")
    parser.add_argument("--head-epochs", type=int, default=30, help="head epochs on cached features (part 2)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    seed_everything(args.seed)
    start = time.perf_counter()
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        fashion_mnist(args, Path(folder))
        seed_everything(args.seed)
        photos(args, Path(folder))
    print(f"\nwhole bench: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
