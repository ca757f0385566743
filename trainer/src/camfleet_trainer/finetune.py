"""One fine-tune of the whole timm model: the split, the loaders, the optimizer, and a step, an epoch, a
prediction pass and a time estimate from real steps (full mode's working parts; `full.train_full` drives them)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from typing import TypedDict

import numpy as np
import torch
from torch import nn
from torch.utils.data import RandomSampler, WeightedRandomSampler

from camfleet_contract.images import Preprocessing
from camfleet_trainer.augment import AUGMENTS, Augment, ImageSet, choose_augment, default_workers, loader
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet
from camfleet_trainer.export import BundleModel
from camfleet_trainer.full_options import MIN_BATCH, FullOptions
from camfleet_trainer.head import class_weights, fit_head
from camfleet_trainer.progress import Estimate, FullHooks
from camfleet_trainer.schedule import lr_factor, sample_groups, stratified_split

log = logging.getLogger(__name__)

CPU_BATCH = 32
GPU_BATCH = 64
EXPORT_GUESS_S = 30.0  # ONNX export, parity check and INT8 on a 2-core CPU; a GPU machine is faster
IMBALANCE = 1.5  # largest / smallest class in the training split above which sampling is class-balanced


class ParamGroup(TypedDict):
    """One AdamW parameter group; `base_lr` is what the schedule scales each step."""

    params: list[nn.Parameter]
    lr: float
    base_lr: float
    weight_decay: float


def _spec(base: Preprocessing, size: int | None) -> Preprocessing:
    """The backbone's preprocessing, or the same crop ratio at another input size."""
    if size is None or size == base.size:
        return base
    return base.model_copy(update={"size": size, "resize": max(size, math.floor(size * base.resize / base.size))})


def _param_groups(module: BundleModel, opts: FullOptions) -> list[ParamGroup]:
    """No weight decay on norms and biases; the new head at a higher learning rate."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    head: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        (head if name.startswith("head.") else decay if p.ndim > 1 else no_decay).append(p)
    scale = opts.head_lr_scale or (1.0 if opts.head_init == "probe" else 10.0)
    head_lr = opts.lr * scale
    return [
        {"params": decay, "lr": opts.lr, "base_lr": opts.lr, "weight_decay": opts.weight_decay},
        {"params": no_decay, "lr": opts.lr, "base_lr": opts.lr, "weight_decay": 0.0},
        {"params": head, "lr": head_lr, "base_lr": head_lr, "weight_decay": opts.weight_decay},
    ]


def make_optimizer(module: BundleModel, opts: FullOptions, cuda: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW([dict(g) for g in _param_groups(module, opts)], fused=cuda)


class FineTune:
    """One fine-tune: the model, the data, the optimizer; methods for a step, an epoch and a prediction pass."""

    def __init__(self, data: LabeledSet, backbone: Backbone, device: torch.device, opts: FullOptions) -> None:
        self.opts = opts
        self.device = device
        self.cuda = device.type == "cuda"
        self.classes = data.classes
        self.spec = _spec(backbone.preprocessing, opts.image_size)
        self.workers = default_workers() if opts.workers is None else opts.workers
        labels = np.array([s.class_index for s in data.samples], dtype=np.int64)
        groups = sample_groups([s.cluster for s in data.samples])  # near-duplicates stay on one side
        self.train_idx, self.val_idx = stratified_split(labels, opts.test_size, opts.seed, groups)
        self.labels = labels
        c = len(data.classes)
        counts = np.bincount(labels[self.train_idx], minlength=c)
        per_class = len(self.train_idx) / c
        self.aug: Augment = choose_augment(per_class) if opts.augment == "auto" else AUGMENTS[opts.augment]
        ratio = counts.max() / max(counts.min(), 1)
        self.balanced = opts.balance == "on" or (opts.balance == "auto" and bool(ratio >= IMBALANCE))
        self.sample_weights = torch.from_numpy(class_weights(labels[self.train_idx], c)[labels[self.train_idx]])
        train_samples = [data.samples[i] for i in self.train_idx]
        val_samples = [data.samples[i] for i in self.val_idx]
        self.train_set = ImageSet(train_samples, labels[self.train_idx].tolist(), self.spec, self.aug)
        self.train_eval_set = ImageSet(train_samples, labels[self.train_idx].tolist(), self.spec, None)
        self.val_set = ImageSet(val_samples, labels[self.val_idx].tolist(), self.spec, None)
        self.generator = torch.Generator().manual_seed(opts.seed)
        torch.manual_seed(opts.seed)

        model = copy.deepcopy(backbone.model)
        if hasattr(model, "drop_rate"):
            model.drop_rate = opts.drop_rate  # type: ignore[assignment]
        model.requires_grad_(True)
        self.backbone = dataclasses.replace(backbone, model=model, preprocessing=self.spec)
        head = nn.Linear(backbone.embedding_dim, c)
        nn.init.zeros_(head.weight)  # zero head: the first steps do not scramble the pretrained features
        nn.init.zeros_(head.bias)
        self.module = BundleModel(self.backbone, head).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
        self.warmup = opts.warmup_epochs if opts.warmup_epochs is not None else min(1.0, 0.1 * opts.epochs)
        self.set_batch(min(opts.batch_size or (GPU_BATCH if self.cuda else CPU_BATCH), len(self.train_idx)))
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def set_batch(self, batch: int) -> None:
        """(Re)build the loaders for a batch size (also after a GPU out-of-memory)."""
        self.batch = max(MIN_BATCH, batch)
        sampler: torch.utils.data.Sampler[int]
        if self.balanced:
            weights = self.sample_weights.tolist()
            sampler = WeightedRandomSampler(weights, len(self.train_idx), True, generator=self.generator)
        else:
            sampler = RandomSampler(self.train_set, generator=self.generator)
        self.train_loader = loader(self.train_set, self.batch, self.workers, sampler, True, self.cuda)
        self.val_loader = loader(self.val_set, self.batch, self.workers, pin_memory=self.cuda)
        steps = max(1, len(self.train_idx) // self.batch)
        self.steps = min(steps, self.opts.max_batches) if self.opts.max_batches else steps

    def train_mode(self) -> None:
        """Training mode, with batch norms left in eval mode (their pretrained statistics) when frozen."""
        self.module.train()
        if self.opts.freeze_bn:
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def validate(self) -> tuple[float, float]:
        """(accuracy, cross-entropy) on the validation split."""
        logits, labels, _ = self.predict(self.val_loader)
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
        return (float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0), loss

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One optimisation step; returns (loss, correct) as tensors (no device sync)."""
        x, y = self._to(x), y.to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            logits, _ = self.module(x)
        loss = self.loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    @torch.inference_mode()
    def predict(self, dl: torch.utils.data.DataLoader, fp32: bool = False) -> tuple[np.ndarray, ...]:
        """(logits, labels, embeddings) of a loader's images in eval mode; bf16 on a GPU unless `fp32`."""
        self.module.eval()
        logits, labels, embs = [], [], []
        for x, y, _ in dl:
            if len(x) == 0:
                continue
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and not fp32):
                lg, emb = self.module(self._to(x))
            logits.append(lg.float().cpu().numpy())
            embs.append(emb.float().cpu().numpy())
            labels.append(y.numpy())
        c, d = len(self.classes), self.backbone.embedding_dim
        if not logits:
            return np.zeros((0, c), np.float32), np.zeros(0, np.int64), np.zeros((0, d), np.float32)
        return np.concatenate(logits), np.concatenate(labels), np.concatenate(embs)

    def init_head_from_probe(self) -> None:
        """Start the head from a linear probe on the frozen features of the training split (LP-FT).

        A zero head needs many steps before its gradients shape the backbone usefully; the probe head is right
        from step one, so the backbone's features are distorted less and tiny datasets learn in a few steps.
        """
        self.module.eval()
        model = self.module.backbone
        feats, labels = [], []
        with torch.inference_mode():
            for x, y, _ in loader(self.train_eval_set, self.batch, self.workers):
                if len(x):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                        f = model.forward_head(model.forward_features(self._to(x)), pre_logits=True)  # type: ignore[operator]
                    feats.append(f.float().cpu().numpy())
                    labels.append(y.numpy())
        probe = fit_head(np.concatenate(feats), np.concatenate(labels), len(self.classes), on_embedding=False)
        head = self.module.head
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(probe.weight))
            head.bias.copy_(torch.from_numpy(probe.bias))

    def estimate(self, after_images: int) -> Estimate:
        """Time real steps (data loading included) on a throwaway optimizer, then put the weights back."""
        state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        optimizer = make_optimizer(self.module, self.opts, self.cuda)
        self.train_mode()
        it = iter(self.train_loader)
        times: list[float] = []
        t0 = time.perf_counter()
        for s in range(1 + self.opts.estimate_steps):  # the first step pays for worker start-up: untimed
            try:
                x, y, _ = next(it)
            except StopIteration:
                it = iter(self.train_loader)
                x, y, _ = next(it)
            if len(x) >= MIN_BATCH:
                self.step(optimizer, x, y)
            if self.cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            if s > 0:
                times.append(now - t0)
            t0 = now
        del it, optimizer
        self.module.load_state_dict(state)
        step_s = float(np.median(times))
        # Evaluation speed: a second validation batch (the first starts the workers).
        first = time.perf_counter()
        seen, timed_s, timed_n = 0, 0.0, 0
        self.module.eval()
        with torch.inference_mode():
            for i, (x, _, _) in enumerate(self.val_loader):
                start = time.perf_counter()
                if len(x):
                    self.module(self._to(x))
                if self.cuda:
                    torch.cuda.synchronize()
                seen += len(x)
                if i >= 1:
                    timed_s, timed_n = time.perf_counter() - start, len(x)
                    break
        eval_image_s = timed_s / timed_n if timed_n else (time.perf_counter() - first) / max(seen, 1)
        epoch_s = self.steps * step_s + len(self.val_idx) * eval_image_s
        train_s = self.opts.epochs * epoch_s
        after_s = after_images * eval_image_s + EXPORT_GUESS_S
        return Estimate(
            device=self.device.type,
            batch_size=self.batch,
            steps_per_epoch=self.steps,
            step_s=step_s,
            eval_image_s=eval_image_s,
            epoch_s=epoch_s,
            epochs=self.opts.epochs,
            train_s=train_s,
            after_s=after_s,
            total_s=train_s + after_s,
        )

    def train_epoch(self, optimizer: torch.optim.Optimizer, epoch: int, hooks: FullHooks) -> tuple[float, float, int]:
        """One pass of `steps` batches at the scheduled learning rates; (mean loss, accuracy, images)."""
        self.train_mode()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for b, (x, y, bad) in enumerate(self.train_loader):
            if b >= self.steps:
                break
            if bad:
                log.warning("epoch %d: %d images no longer decode; skipped", epoch + 1, len(bad))
            if len(x) < MIN_BATCH:
                continue
            factor = lr_factor(epoch + (b + 1) / self.steps, self.opts.epochs, self.warmup, self.opts.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            loss, right = self.step(optimizer, x, y)
            loss_sum += loss * len(y)
            correct += right
            seen += len(y)
            if hooks.batch is not None:
                # A device sync every few batches only: the bar's running loss need not be exact each step.
                running = float(loss_sum / seen) if (b % 10 == 0 or b + 1 == self.steps) else math.nan
                hooks.batch(epoch + 1, b + 1, self.steps, running)
        if seen == 0:
            raise RuntimeError(f"epoch {epoch + 1}: no batch of at least {MIN_BATCH} decodable images")
        return float(loss_sum / seen), float(correct) / seen, seen
