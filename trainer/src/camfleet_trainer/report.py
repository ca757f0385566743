"""The human summary the CLI prints after training, for either mode."""

from __future__ import annotations

from camfleet_contract.bundle import Manifest
from camfleet_trainer.full import FullResult
from camfleet_trainer.pipeline import TrainOutcome


def _int8_line(manifest: Manifest) -> str | None:
    info = manifest.metrics.get("int8")
    if not isinstance(info, dict):
        return None
    if "error" in info:
        return f"int8       not included: {info['error']}"
    verdict = "included" if info.get("included") else f"left out (loses {info['max_loss_points']} point or more)"
    return (
        f"int8       {verdict}: accuracy {info['int8_accuracy']:.3f} vs {info['fp32_accuracy']:.3f} FP32 "
        f"({info['loss_points']:.2f} points lost, agreement {info['agreement']:.3f}) on {info['images']} images "
        f"({info['eval_set']}); batch 1 {info['int8_ms_batch1']:.1f} ms vs {info['fp32_ms_batch1']:.1f} ms"
    )


def format_report(outcome: TrainOutcome) -> str:
    """The human summary the CLI prints after training."""
    if outcome.full is not None:
        return _format_full(outcome, outcome.full)
    assert outcome.quick is not None
    m = outcome.quick.metrics
    man = outcome.manifest
    lines = [
        f"bundle     {outcome.bundle_dir}  (classifier {man.classifier}, version {man.version})",
        f"backbone   {outcome.manifest.backbone}  embedding {outcome.manifest.embedding_dim}-d",
        f"images     {sum(outcome.counts.values())} in {len(outcome.classes)} classes"
        + (f", {len(outcome.skipped)} skipped (undecodable)" if outcome.skipped else ""),
        f"OOF        accuracy {m['oof_accuracy']:.3f}  balanced {m['oof_balanced_accuracy']:.3f}  "
        f"({m['folds']}-fold)  temperature {m['temperature']:.3f}",
        f"anomaly    threshold {outcome.quick.calibration.threshold:.3f} "
        f"(flags ~{outcome.quick.calibration.target_flag_rate:.0%} of held-out normal images)",
        f"labels     about {m['likely_mislabelled']} look wrong (report.json's label_errors, most doubtful first)",
        "",
        f"{'class':<20} {'images':>6} {'precision':>9} {'recall':>7}",
    ]
    for name in outcome.classes:
        pc = m["per_class"][name]
        lines.append(f"{name:<20} {outcome.counts[name]:>6} {pc['precision']:>9.3f} {pc['recall']:>7.3f}")
    for name, reason in outcome.skipped[:10]:
        lines.append(f"skipped {name}: {reason}")
    int8_line = _int8_line(man)
    if int8_line:
        lines.append(int8_line)
    s = outcome.seconds
    lines.append("")
    lines.append(
        f"time       {s.get('total', 0):.1f}s (embed {s.get('embed', 0):.1f}s, train {s.get('train', 0):.1f}s, "
        f"export {s.get('export', 0):.1f}s)"
    )
    return "\n".join(lines)


def _format_full(outcome: TrainOutcome, result: FullResult) -> str:
    """The full mode's summary: the split, the epochs, validation metrics, calibration, INT8, time."""
    m = result.metrics
    man = outcome.manifest
    split = f"{m['train_images']} train / {m['val_images']} validation"
    stop = f", stopped early after {m['epochs_run']}" if m["stopped_early"] else ""
    lines = [
        f"bundle     {outcome.bundle_dir}  (classifier {man.classifier}, version {man.version})",
        f"backbone   {man.backbone} fine-tuned at {m['image_size']} px on {m['device']}, "
        f"embedding {man.embedding_dim}-d",
        f"images     {sum(outcome.counts.values())} in {len(outcome.classes)} classes ({split})"
        + (f", {len(outcome.skipped)} skipped (undecodable)" if outcome.skipped else ""),
        f"training   {m['epochs_run']}/{m['epochs_max']} epochs{stop}, best epoch {m['best_epoch']}; batch "
        f"{m['batch_size']}, {m['augment']} augmentation, {'class-balanced' if m['balanced_sampling'] else 'plain'} "
        f"sampling, {m['train_images_per_s']:.1f} training images/s",
        f"validation accuracy {m['val_accuracy']:.3f}  balanced {m['val_balanced_accuracy']:.3f}  "
        f"NLL {m['val_nll']:.3f}  temperature {m['temperature']:.3f}",
        f"anomaly    threshold {result.calibration.threshold:.3f} "
        f"(flags ~{result.calibration.target_flag_rate:.0%} of validation images)",
    ]
    int8_line = _int8_line(man)
    if int8_line:
        lines.append(int8_line)
    lines += ["", f"{'class':<20} {'images':>6} {'precision':>9} {'recall':>7}   (validation split)"]
    for name in outcome.classes:
        pc = m["per_class"][name]
        lines.append(f"{name:<20} {outcome.counts[name]:>6} {pc['precision']:>9.3f} {pc['recall']:>7.3f}")
    for name, reason in outcome.skipped[:10]:
        lines.append(f"skipped {name}: {reason}")
    s = outcome.seconds
    lines += [
        "",
        f"time       {s.get('total', 0):.1f}s (training {s.get('train', 0):.1f}s, export {s.get('export', 0):.1f}s; "
        f"estimated {result.estimate.total_s:.0f}s)",
    ]
    return "\n".join(lines)
