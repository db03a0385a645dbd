"""Kill-and-resume: how often a training run killed with SIGKILL at a random moment leaves a loadable best checkpoint,
and how often `--resume` then finishes the run. The bar is N/N.

    python bench/kill_resume.py                  # 20 runs of 6 epochs
    python bench/kill_resume.py --runs 50 --epochs 8 --seed 1

Data: a small synthetic landmark dataset (src.synthetic.make_synthetic_dataset: 3 classes, 12 train + 4 test photos each),
built once. Each trial, in a fresh temporary folder, starts
`python -m src.train --model scratch --dataset landmarks --epochs E --image-size 64 --batch-size 8 --num-workers 0
--save-path TRIAL/model.pt`, waits for the first best checkpoint (TRIAL/model.pt), sleeps a random time, uniform
between 0 and the rest of one uninterrupted calibration run up to its last write, the run record (seeded: --seed), and
kills the process with SIGKILL.
Then it checks that TRIAL/model.pt loads (torch.load(weights_only=True) into src.transfer.build_model's MyModel), runs the
same command with --resume, and counts the resume as finished when it exits 0, TRIAL/model.json holds E epochs of
history, TRIAL/model.pt loads and no temporary file (.NAME.tmp) is left in TRIAL; and it compares that history with
the calibration run's (with no worker processes, a resumed run draws the same random numbers: equal, to the bit).
Prints one line per trial (kill time, what was on disk, resume outcome, any other file left afterwards; FAILED lines
with the child's last log line), then `loadable best checkpoint after the kill: K/N`, `resume finished: R/N`,
`resumed history equal to the uninterrupted run's: S/N` (N: the runs actually killed) and the time taken.
A run that ended before its kill tested nothing: it is reported on a line of its own ('finished before the kill'),
as is one that failed before its first best checkpoint, and another run is started in its place (up to 2N runs in
all), so that N counts runs really killed. Exit code 0 whatever the figures.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from src.helpers import get_device  # noqa: E402
from src.paths import PROJECT_ROOT  # noqa: E402
from src.synthetic import make_synthetic_dataset  # noqa: E402
from src.transfer import build_model  # noqa: E402

N_CLASSES, N_TRAIN, N_TEST = 3, 12, 4
RUN_FILES = {"model.pt", "model.resume.pt", "model.json", "train.log", "resume.log"}  # what a finished trial holds
HISTORY_KEYS = ("train_loss", "valid_loss", "train_accuracy", "valid_accuracy", "lr")


def train_command(save_path: Path, epochs: int, image_size: int, resume: bool = False) -> list[str]:
    command = [sys.executable, "-m", "src.train", "--model", "scratch", "--dataset", "landmarks",
               "--epochs", str(epochs), "--image-size", str(image_size), "--batch-size", "8", "--num-workers", "0",
               "--save-path", str(save_path)]  # fmt: skip
    return command + ["--resume"] if resume else command


def start(command: list[str], log: Path, env: dict) -> tuple[subprocess.Popen, object]:
    handle = open(log, "wb")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT), handle


def wait_for_file(path: Path, process: subprocess.Popen) -> bool:
    """Poll until `path` exists (True) or the process has ended without it (False)."""
    while not path.exists():
        if process.poll() is not None:
            return path.exists()
        time.sleep(0.005)
    return True


def last_line(log: Path) -> str:
    """The child's last non-empty log line (tqdm's carriage-return updates count as lines)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


def load_best(path: Path, image_size: int) -> str | None:
    """None when `path` loads into the model, else what went wrong (one line)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        build_model("scratch", N_CLASSES, image_size).load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any failure to load is the figure
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    return None


def on_disk(folder: Path) -> str:
    """The run's files after the kill, with the epoch the resume state holds."""
    names = sorted(path.name for path in folder.iterdir() if not path.name.endswith(".log"))
    resume = folder / "model.resume.pt"
    if resume.exists():
        try:
            epoch = torch.load(resume, map_location="cpu", weights_only=False)["epoch"]
            names[names.index(resume.name)] = f"{resume.name} (epoch {epoch})"
        except Exception as err:  # noqa: BLE001
            names[names.index(resume.name)] = f"{resume.name} (unreadable: {type(err).__name__})"
    return ", ".join(names) or "nothing"


def temp_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".") and path.name.endswith(".tmp"))


def check_resumed(folder: Path, returncode: int, epochs: int, image_size: int) -> str | None:
    """None when the resumed run finished properly, else the first problem found."""
    if returncode != 0:
        return f"exit code {returncode}"
    record = folder / "model.json"
    if not record.exists():
        return "no model.json"
    try:
        history = json.loads(record.read_text())["history"]
        lengths = {key: len(history[key]) for key in HISTORY_KEYS}
    except Exception as err:  # noqa: BLE001
        return f"model.json unreadable ({type(err).__name__}: {err})"
    if set(lengths.values()) != {epochs}:
        return f"model.json history lengths {lengths}, expected {epochs} each"
    problem = load_best(folder / "model.pt", image_size)
    if problem:
        return f"model.pt does not load after the resume: {problem}"
    left = temp_files(folder)
    if left:
        return f"temporary files left: {', '.join(left)}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="trials: runs killed and resumed")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each training run")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    print(machine(get_device()))
    print(f"data: synthetic, {N_CLASSES} classes x ({N_TRAIN} train + {N_TEST} test); MyModel, {args.epochs} epochs, "
          f"{args.image_size} px, batch 8, no workers; {args.runs} runs, kill seed {args.seed}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kill_resume_") as tmp:
        tmp = Path(tmp)
        data = make_synthetic_dataset(tmp / "data", n_classes=N_CLASSES, n_train=N_TRAIN, n_test=N_TEST)
        env = {**os.environ, "LANDMARK_DATA": str(data)}

        # Calibration: one uninterrupted run (it also caches the dataset's statistics before any kill).
        folder = tmp / "calibration"
        folder.mkdir()
        t0 = time.perf_counter()
        command = train_command(folder / "model.pt", args.epochs, args.image_size)
        process, handle = start(command, folder / "train.log", env)
        found = wait_for_file(folder / "model.pt", process)
        first_best = time.perf_counter() - t0
        found = found and wait_for_file(folder / "model.json", process)
        last_write = time.perf_counter() - t0  # the run record is its last file: after it only the exit is left
        process.wait()
        handle.close()
        total = time.perf_counter() - t0
        if process.returncode != 0 or not found:
            print(f"FAILED calibration run: exit code {process.returncode}: {last_line(folder / 'train.log')}")
            return
        reference = json.loads((folder / "model.json").read_text())["history"]
        window = last_write - first_best
        print(f"calibration run: {total:.1f} s, first best checkpoint after {first_best:.1f} s, run record after "
              f"{last_write:.1f} s; kills uniform in 0-{window:.1f} s after the first best")  # fmt: skip

        loadable = resumed = same = early = failed_early = 0
        trial = killed = 0
        while killed < args.runs and trial < 2 * args.runs:  # a run that ended before its kill is tried again
            trial += 1
            folder = tmp / f"trial_{trial:02d}"
            folder.mkdir()
            save_path = folder / "model.pt"
            delay = rng.uniform(0, window)
            t0 = time.perf_counter()
            process, handle = start(train_command(save_path, args.epochs, args.image_size), folder / "train.log", env)
            if not wait_for_file(save_path, process):
                process.wait()
                handle.close()
                failed_early += 1
                print(f"run {trial:2d}: FAILED before its first best checkpoint (exit code {process.returncode}): "
                      f"{last_line(folder / 'train.log')}")  # fmt: skip
                continue
            time.sleep(delay)
            try:
                os.kill(process.pid, signal.SIGKILL)  # harmless on a process that has exited but is not yet reaped
            except ProcessLookupError:
                pass
            process.wait()
            handle.close()
            at = time.perf_counter() - t0
            if process.returncode != -signal.SIGKILL:  # it exited on its own before the signal
                early += 1
                print(f"run {trial:2d}: finished before the kill (exit code {process.returncode}, {at:.1f} s)")
                continue

            killed += 1
            disk = on_disk(folder)
            problem = load_best(save_path, args.image_size)
            loadable += problem is None
            line = f"run {trial:2d}: killed at {at:5.2f} s (+{delay:.2f} s after the first best); on disk: {disk}; "
            line += "best loads" if problem is None else f"FAILED best checkpoint: {problem}"

            process, handle = start(train_command(save_path, args.epochs, args.image_size, resume=True),
                                    folder / "resume.log", env)  # fmt: skip
            process.wait()
            handle.close()
            failure = check_resumed(folder, process.returncode, args.epochs, args.image_size)
            resumed += failure is None
            repeated = failure is None and json.loads((folder / "model.json").read_text())["history"] == reference
            same += repeated
            extra = sorted(path.name for path in folder.iterdir() if path.name not in RUN_FILES)
            also = f"; afterwards also on disk: {', '.join(extra)}" if extra else ""
            if failure is None:
                print(f"{line}; resume finished{'' if repeated else ' (history differs from the uninterrupted run)'}"
                      f"{also}")  # fmt: skip
            else:
                print(f"{line}; FAILED resume: {failure}{also}; last log line: {last_line(folder / 'resume.log')}")

    print(f"loadable best checkpoint after the kill: {loadable}/{killed}")
    print(f"resume finished: {resumed}/{killed}")
    print(f"resumed history equal to the uninterrupted run's: {same}/{killed}")
    if early or failed_early:
        print(f"not killed: {early} finished before the kill, {failed_early} failed before their first best checkpoint"
              f" (of {trial} runs started)")  # fmt: skip
    print(f"time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
