"""Judge a bundle on a folder of labelled images, through the same runtime the agents and the hub use.

Only numpy, Pillow and the contract's ONNX Runtime classifier: no torch, so `camfleet-trainer eval` starts at
once and the hub can reuse this module. Folders named after a bundle class are scored for accuracy; other
folders are *unseen kinds*, for which only the share flagged as anomalies counts.

>>> ev = evaluate_bundle("bundles/clothes", "data/validation")
>>> print(render_text(ev))
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from camfleet_contract import charts
from camfleet_contract.images import ImageError, decode_image
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_trainer.data import IMAGE_SUFFIXES
from camfleet_trainer.errors import DatasetError

DEFAULT_BATCH = 32
REPORT_JSON = "evaluation.json"
CONFUSION_PNG = "confusion.png"
MAX_MATRIX_CLASSES = 30

# progress(done, total) -> None
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class; support = images whose folder is that class."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class UnseenKind:
    """A folder that is no class of the bundle: how many of its images the anomaly flag caught."""

    name: str
    images: int
    flagged: int
    flag_rate: float
    predicted_as: dict[str, int]  # what the classifier called them (most common first)


@dataclass(frozen=True)
class Mistake:
    """A known-class image classified wrongly, for a thumbnail gallery."""

    path: str
    label: str
    predicted: str
    probability: float
    anomaly: bool


@dataclass
class Evaluation:
    """Everything `eval` reports; `to_json()` is its JSON form."""

    bundle: str
    version: str
    model: str  # the bundle file that ran (model.onnx, or the INT8 one)
    classes: list[str]
    images: int  # known-class images classified
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted class (bundle order)
    flagged: int  # known-class images flagged as anomalies
    flag_rate: float
    flag_rate_wrong: float | None  # share of the misclassified known images that were flagged
    target_flag_rate: float
    unseen: list[UnseenKind] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    mistakes: list[Mistake] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        """The JSON form that `eval --json` prints and writes."""
        out = asdict(self)
        out["unreadable"] = [{"path": p, "reason": r} for p, r in self.unreadable]
        return json.dumps(out, indent=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts; rows are the true class, columns the predicted one."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return confusion


def per_class_metrics(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, ClassMetrics]:
    """Precision, recall, F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    out = {}
    for i, name in enumerate(classes):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        recall = tp[i] / support[i] if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = ClassMetrics(
            precision=round(float(precision), 4),
            recall=round(float(recall), 4),
            f1=round(float(f1), 4),
            support=int(support[i]),
            predicted=int(predicted[i]),
        )
    return out


def accuracy_scores(confusion: np.ndarray) -> tuple[float, float]:
    """(accuracy, balanced accuracy = mean recall over the classes that have images)."""
    total = confusion.sum()
    support = confusion.sum(axis=1)
    present = support > 0
    accuracy = float(np.trace(confusion) / total) if total else 0.0
    recalls = np.diag(confusion)[present] / support[present]
    return round(accuracy, 4), round(float(recalls.mean()) if recalls.size else 0.0, 4)


def list_images(root: str | Path) -> dict[str, list[Path]]:
    """Image files per sub-folder (sorted; hidden files and non-image suffixes skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data: {root} is not a folder (expected one sub-folder of images per class)")
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if files:
            found[folder.name] = files
    if not found:
        raise DatasetError(f"data: {root} has no sub-folder with images")
    return found


@dataclass
class _Tally:
    """What the bundle said about the images so far: known-class outcomes, unseen kinds, unreadable files."""

    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    flags_known: list[bool] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    unseen: list[UnseenKind] = field(default_factory=list)
    done: int = 0

    def add_folder(
        self,
        folder: str,
        paths: list[Path],
        rt: ClassifierRuntime,
        index: dict[str, int],
        batch_size: int,
        progress: Callable[[], None],
    ) -> None:
        """Classify one class folder in batches; a folder the bundle does not know counts as an unseen kind."""
        unseen_flags: list[bool] = []
        unseen_labels: Counter[str] = Counter()
        for chunk_start in range(0, len(paths), batch_size):
            chunk = paths[chunk_start : chunk_start + batch_size]
            images, owners = [], []
            for path in chunk:
                try:
                    images.append(decode_image(path.read_bytes()))
                    owners.append(path)
                except (ImageError, OSError) as exc:
                    self.unreadable.append((str(path), str(exc)))
            for path, result in zip(owners, rt.classify(images), strict=True):
                if folder in index:
                    self.labels.append(index[folder])
                    self.predicted.append(index[result.label])
                    self.flags_known.append(result.anomaly)
                    if result.label != folder:
                        self.mistakes.append(
                            Mistake(str(path), folder, result.label, round(result.probability, 4), result.anomaly)
                        )
                else:
                    unseen_flags.append(result.anomaly)
                    unseen_labels[result.label] += 1
            self.done += len(chunk)
            progress()
        if folder not in index and unseen_flags:
            self.unseen.append(
                UnseenKind(
                    name=folder,
                    images=len(unseen_flags),
                    flagged=int(sum(unseen_flags)),
                    flag_rate=round(float(np.mean(unseen_flags)), 4),
                    predicted_as=dict(unseen_labels.most_common()),
                )
            )


def evaluate_bundle(
    bundle_dir: str | Path,
    data_dir: str | Path,
    public_key: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int | None = None,
    runtime: ClassifierRuntime | None = None,
    progress: ProgressFn | None = None,
    prefer_int8: bool = False,
) -> Evaluation:
    """Classify every image under `data_dir` (a folder per class) with the bundle and measure the results.

    Raises BundleError for a bundle that does not verify and DatasetError for a folder without images;
    an unreadable image is listed in the result, not fatal. `prefer_int8` judges the INT8 model, as an
    agent would run it, when the bundle vouches for one.
    """
    start = time.perf_counter()
    rt = runtime or ClassifierRuntime(bundle_dir, public_key=public_key, threads=threads, prefer_int8=prefer_int8)
    classes = rt.classes
    index = {name: i for i, name in enumerate(classes)}
    folders = list_images(data_dir)
    total = sum(map(len, folders.values()))
    tally = _Tally()

    def report() -> None:
        if progress is not None:
            progress(tally.done, total)

    for folder, paths in folders.items():
        tally.add_folder(folder, paths, rt, index, batch_size, report)
    confusion = confusion_matrix(np.array(tally.labels), np.array(tally.predicted), len(classes))
    accuracy, balanced = accuracy_scores(confusion)
    flags = np.array(tally.flags_known, dtype=bool)
    wrong = np.array(tally.labels) != np.array(tally.predicted)
    return Evaluation(
        bundle=str(bundle_dir),
        version=rt.version,
        model=rt.model_file,
        classes=classes,
        images=len(tally.labels),
        accuracy=accuracy,
        balanced_accuracy=balanced,
        per_class=per_class_metrics(confusion, classes),
        confusion=confusion.tolist(),
        flagged=int(flags.sum()),
        flag_rate=round(float(flags.mean()), 4) if flags.size else 0.0,
        flag_rate_wrong=round(float(flags[wrong].mean()), 4) if wrong.any() else None,
        target_flag_rate=rt.manifest.anomaly.target_flag_rate,
        unseen=tally.unseen,
        unreadable=tally.unreadable,
        mistakes=tally.mistakes,
        seconds=round(time.perf_counter() - start, 3),
    )


def render_text(ev: Evaluation, max_listed: int = 20) -> str:
    """The human report: headline figures, per-class table, confusion matrix, unseen kinds, unreadable files."""
    lines = [
        f"bundle     {ev.bundle}  (version {ev.version}, {len(ev.classes)} classes, {ev.model})",
        f"images     {ev.images} of known classes"
        + (f", {sum(u.images for u in ev.unseen)} of unseen kinds" if ev.unseen else "")
        + (f", {len(ev.unreadable)} unreadable" if ev.unreadable else ""),
    ]
    if ev.images:
        lines.append(f"accuracy   {ev.accuracy:.4f}  balanced {ev.balanced_accuracy:.4f}")
        wrong = "" if ev.flag_rate_wrong is None else f"; {ev.flag_rate_wrong:.1%} of the misclassified ones"
        lines.append(
            f"anomaly    {ev.flagged}/{ev.images} known images flagged ({ev.flag_rate:.1%}, "
            f"calibrated for {ev.target_flag_rate:.0%}){wrong}"
        )
        shown = [ev.classes[i] for i in shown_classes(ev)]
        width = max(12, *(len(c) for c in shown)) + 1
        lines += ["", f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}"]
        for name in shown:
            m = ev.per_class[name]
            lines.append(f"{name:<{width}} {m.precision:>9.3f} {m.recall:>7.3f} {m.f1:>6.3f} {m.support:>7}")
        lines += ["", "confusion (rows: true class, columns: predicted)", *_confusion_lines(ev)]
    else:
        lines.append("accuracy   n/a (no folder is named after a class of the bundle)")
    if ev.unseen:
        lines += ["", "unseen kinds (folders that are no class of the bundle): share flagged as anomalies"]
        for u in ev.unseen:
            top = ", ".join(f"{k} {v}" for k, v in list(u.predicted_as.items())[:3])
            lines.append(
                f"  {u.name:<{max(12, len(u.name))}} {u.flagged:>4}/{u.images:<4} {u.flag_rate:>6.1%}  (called: {top})"
            )
    if ev.unreadable:
        lines += ["", f"unreadable images: {len(ev.unreadable)}"]
        lines += [f"  {p}: {r}" for p, r in ev.unreadable[:max_listed]]
        if len(ev.unreadable) > max_listed:
            lines.append(f"  … and {len(ev.unreadable) - max_listed} more")
    lines += ["", f"time       {ev.seconds:.1f}s"]
    return "\n".join(lines)


def shown_classes(ev: Evaluation) -> list[int]:
    """Classes the matrix shows: all of them, or for a big bundle (ImageNet) those with images or predictions."""
    if len(ev.classes) <= MAX_MATRIX_CLASSES:
        return list(range(len(ev.classes)))
    m = np.asarray(ev.confusion)
    return [i for i in range(len(ev.classes)) if m[i].sum() or m[:, i].sum()]


def _confusion_lines(ev: Evaluation) -> list[str]:
    """The matrix as a text table, columns headed by class numbers (names are listed on the rows)."""
    shown = shown_classes(ev)
    m = np.asarray(ev.confusion)[np.ix_(shown, shown)]
    cell = max(4, len(str(int(m.max()) if m.size else 0)) + 1)
    width = max(len(ev.classes[i]) for i in shown) + 6
    rows = [" " * width + "".join(f"{i:>{cell}}" for i in shown)]
    for r, i in enumerate(shown):
        label = f"{i:>3} {ev.classes[i]}"
        rows.append(f"{label:<{width}}" + "".join(f"{v:>{cell}}" for v in m[r]))
    if len(shown) < len(ev.classes):
        rows.append(f"({len(ev.classes) - len(shown)} classes without images or predictions left out)")
    return rows


def confusion_image(ev: Evaluation) -> Image.Image:
    """The confusion matrix as a picture, drawn by the contract's renderer (the same one as the hub's report)."""
    return charts.confusion_image(ev.confusion, ev.classes)


def write_report(ev: Evaluation, report_dir: str | Path) -> list[Path]:
    """evaluation.json and confusion.png in `report_dir` (created); returns the paths written."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / REPORT_JSON
    json_path.write_text(ev.to_json())
    written = [json_path]
    if ev.classes and ev.images:
        png_path = folder / CONFUSION_PNG
        confusion_image(ev).save(png_path)
        written.append(png_path)
    return written
