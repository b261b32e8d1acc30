"""The pretraining loop: data, model, optimiser, resume, loop, save -- readable top to bottom.

Identity and resumption: the run id is the hash of the resolved config, so running the same
command again finds the same run. A completed run is reused as is; an interrupted or killed one
resumes from its last checkpoint. Augmentations are seeded per step and the data order per epoch,
so a resumed CPU run computes exactly what an uninterrupted one would have, and metrics are keyed
by (run, key, step), so replayed steps overwrite instead of duplicating.

A tuning study may end a run early: ``after_epoch`` (see :data:`EpochGate`) sees each epoch's
metrics once they are stored and the checkpoint is saved, and a reason it returns ends the run as
'pruned' -- resumable later like an interrupted one.

No step waits for the device: the loss terms stay on it until a sync point (every ``log_every``
steps, the end of an epoch, before any checkpoint), where they are read in one transfer and
checked for NaN -- see :class:`_Window`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from sslbench import checkpoint as ckpt
from sslbench import numerics, paths
from sslbench.config import TrainConfig
from sslbench.db.buffered import BufferedWriter, StoreUnavailableError
from sslbench.db.heartbeat import Heartbeat
from sslbench.db.models import RunKind, RunStatus
from sslbench.db.ownership import RunBusyError
from sslbench.db.writer import RunWriter
from sslbench.errors import ConfigError, SSLBenchError, UnknownRunError, one_line
from sslbench.losses.inputs import NonFiniteEmbeddingsError, deferred_finite_checks
from sslbench.train import distributed
from sslbench.train.optim import build_optimizer, lr_at, scaled_lr, set_lr
from sslbench.train.probe import OnlineProbe, encode, probe_accuracy

if TYPE_CHECKING:
    from sslbench.db.store import Store


class NonFiniteLoss(SSLBenchError):
    """The loss became NaN or infinite; the run stops as failed."""


@dataclass
class TrainResult:
    run_id: str
    status: RunStatus
    reused: bool
    run_dir: Path
    summary: dict[str, float] = field(default_factory=dict)


class _StopFlag:
    """SIGTERM / first SIGINT: finish the step, checkpoint, mark the run interrupted."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the augmentation generator at a global step (resume-exact, cheap to set)."""
    return (seed * 1_000_003 + step * 8191 + rank) % (2**63 - 1)


def load_data(cfg: TrainConfig):
    """(pretraining split, test split) -- raises DataError before anything is written."""
    from sslbench.data import load_dataset
    from sslbench.data.subset import subset

    root = cfg.data_root or None
    train = load_dataset(cfg.dataset, "pretrain", root, image_size=cfg.image_size)
    test = load_dataset(cfg.dataset, "test", root, image_size=cfg.image_size)
    if cfg.train_samples:
        train = subset(train, cfg.train_samples, seed=cfg.seed)
    return train, test


#: Called on rank 0 after each epoch but the last with (epochs done, that epoch's metrics), once
#: they are stored and checkpointed; a reason (text) stops the run as 'pruned', None goes on.
EpochGate = Callable[[int, dict[str, float]], "str | None"]


def pretrain(cfg: TrainConfig, store: Store, *, command: list[str], progress: bool = True,
             claim: int | None = None, after_epoch: EpochGate | None = None) -> TrainResult:
    """Runs (or resumes, or reuses) the pretraining run that ``cfg`` identifies.

    Everything that can be checked is checked before the store or the run folder is touched.
    Then this process takes ownership of the run (refused while another live process owns it;
    ``claim``: the attempt a scheduler opened for this worker), and trains under the numerics
    recorded at the run's first start. Failures that can only happen now (a full disk, a file
    that became unreadable, out of memory) end the run 'failed' with a one-line cause.
    ``after_epoch``: a tuning study's pruner (:data:`EpochGate`).

    Under torchrun every process calls this; only rank 0 touches the store and the run folder.
    """
    from sslbench.device import device_names
    from sslbench.environment import capture
    from sslbench.train.preflight import check_train

    info = distributed.from_env()
    distributed.check_batch(cfg.batch_size, info)
    if not info.enabled and _completed(store, cfg.run_id):
        # Reused as it is: its data need not be loaded, nor its memory estimated.
        return TrainResult(cfg.run_id, RunStatus.COMPLETED, True, paths.run_dir(cfg.run_id),
                           store.summary(cfg.run_id))
    device = distributed.setup(info, cfg.device)
    train_ds, test_ds = load_data(cfg)
    check_train(cfg, train_ds, test_ds, device, info.world_size)
    rdir = paths.run_dir(cfg.run_id)
    opened = None
    if info.is_main:
        opened = _open_run(cfg, store, device, command, claim, info.world_size,
                           env=capture(device_names(device)))
    status, settings = distributed.broadcast(opened, info)
    if status == RunStatus.COMPLETED:
        return TrainResult(cfg.run_id, RunStatus.COMPLETED, True, rdir, store.summary(cfg.run_id))
    if status == "busy":
        raise RunBusyError(settings)
    if status == "processes":
        raise ConfigError(settings)
    if info.is_main:
        rdir.mkdir(parents=True, exist_ok=True)
    with _writer(store, info) as writer:
        status, why = _train_and_close(cfg, writer, store, settings, device, train_ds, test_ds,
                                       rdir, progress and info.is_main, info, after_epoch)
        summary = writer.summary(cfg.run_id)
    return TrainResult(cfg.run_id, status, False, rdir, summary)


def _writer(store: Store, info: distributed.DistInfo
            ) -> contextlib.AbstractContextManager[RunWriter]:
    """Rank 0 writes through a buffer emptied by a background thread (metrics never wait for
    the database; see :mod:`sslbench.db.buffered`); the other ranks drop every write."""
    if info.is_main:
        return BufferedWriter(store)
    return contextlib.nullcontext(distributed.NullStore())


def _train_and_close(cfg: TrainConfig, writer: RunWriter, store: Store, settings: Any,
                     device: torch.device, train_ds, test_ds, rdir: Path, show_progress: bool,
                     info: distributed.DistInfo, after_epoch: EpochGate | None
                     ) -> tuple[RunStatus, str | None]:
    """Train, then record how the run ended (its status, and for a failure the one-line cause
    and failure class). A store that stayed unreachable past the writer's bound cannot record
    anything: that error propagates as it is (one line), the last checkpoint intact."""
    try:
        with numerics.applied(settings), _StopFlag() as stop, \
                _beating(store, cfg, info):
            status, why = _train(cfg, writer, device, train_ds, test_ds, rdir, stop,
                                 show_progress, info, after_epoch)
    except StoreUnavailableError:
        raise
    except NonFiniteLoss as err:
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=str(err),
                          failure_class="nonfinite")
        raise
    except ckpt.CheckpointWriteError as err:
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=str(err), failure_class="io")
        raise
    except SSLBenchError as err:
        message = one_line(err)
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=message, failure_class="input")
        if message != str(err):
            raise RunFailed(message) from None
        raise
    except KeyboardInterrupt:
        writer.set_status(cfg.run_id, RunStatus.INTERRUPTED, error="KeyboardInterrupt")
        raise
    except torch.OutOfMemoryError:
        message = (f"out of memory on {device} (batch {cfg.batch_size}, dim {cfg.dim}, "
                   f"{cfg.backbone}): lower --batch-size or --dim, or use a larger device")
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=message, failure_class="oom")
        raise RunFailed(message) from None
    except OSError as err:
        message = (f"run {cfg.run_id} stopped: {_os_error(err)}; fix it and re-run the same "
                   "command to resume from the last checkpoint")
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=message, failure_class="io")
        raise RunFailed(message) from None
    except BaseException as err:
        if distributed.peer_lost(err, info):
            # Another process of the run died (kill -9, a crash; its cause is in its log):
            # infrastructure, like a killed worker, so the scheduler retries and a sweep
            # resumes it from the last checkpoint.
            message = (f"run {cfg.run_id}: another of its {info.world_size} processes ended "
                       f"({one_line(err)})")
            writer.set_status(cfg.run_id, RunStatus.KILLED, error=message,
                              failure_class="killed")
            raise RunFailed(message) from None
        writer.set_status(cfg.run_id, RunStatus.FAILED, error=traceback.format_exc(),
                          failure_class="error")
        raise
    writer.set_status(cfg.run_id, status, error=why)
    return status, why


class RunFailed(SSLBenchError):
    """A run failed for a cause outside the program (disk, memory); the store says why."""


def _os_error(err: OSError) -> str:
    reason = err.strerror or one_line(err)
    return f"{reason}: {err.filename}" if err.filename else reason


def _completed(store: Store, run_id: str) -> bool:
    try:
        return store.get_run(run_id).status == RunStatus.COMPLETED
    except UnknownRunError:
        return False


def _open_run(cfg: TrainConfig, store: Store, device: torch.device, command: list[str],
              claim: int | None, processes: int, env: dict) -> tuple[str, Any]:
    """Create or find the run, take ownership, adopt its numerics -- on rank 0, broadcast.

    Returns ``(COMPLETED, None)``, ``("busy", message)``, ``("processes", message)`` (a resume
    in another number of processes than the run started with) or ``(RUNNING, numerics)``.
    """
    record, _ = store.upsert_run(run_id=cfg.run_id, kind=RunKind.PRETRAIN,
                                 config=cfg.to_dict(), command=command, env=env,
                                 method=cfg.method, dataset=cfg.dataset)
    if record.status == RunStatus.COMPLETED:
        return RunStatus.COMPLETED, None
    started = numerics.recorded_processes(record.numerics) if record.numerics else processes
    if started != processes:
        # Refused, not adopted: the count is fixed by how the processes were launched, and
        # mixing two counts in one run would store a result that neither count computes.
        how = (f"torchrun --nproc-per-node {started} -m sslbench train ..." if started > 1
               else "sslbench train ... (without torchrun)")
        return "processes", (f"run {cfg.run_id} was started in {started} process(es), not "
                             f"{processes}: resume it the same way ({how}; one run id, one "
                             "result)")
    try:
        store.set_status(cfg.run_id, RunStatus.RUNNING, pid=os.getpid(), claim=claim)
    except RunBusyError as err:
        return "busy", str(err)
    asked = numerics.proposed(device, cfg.threads, processes)
    settings = store.adopt_numerics(cfg.run_id, asked)
    if cfg.threads and settings.get("cpu_threads") != asked["cpu_threads"]:
        _warn(f"run {cfg.run_id} keeps the {settings['cpu_threads']} CPU thread(s) it was "
              f"started with, not --threads {cfg.threads} (one run id, one result)")
    return RunStatus.RUNNING, settings


def _beating(store: Store, cfg: TrainConfig, info: distributed.DistInfo):
    """The run's heartbeat from a side thread, on the process that owns the store."""
    url = getattr(store, "url", None)
    if not info.is_main or not url:
        return contextlib.nullcontext()
    return Heartbeat(url, cfg.run_id)


class TrainState:
    """Everything a checkpoint holds, built fresh or restored."""

    def __init__(self, cfg: TrainConfig, device: torch.device, num_classes: int,
                 info: distributed.DistInfo):
        from sslbench.device import memory_format
        from sslbench.losses import build_criterion
        from sslbench.models import build_model

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.backbone, cfg.projector, cfg.dim, cifar_stem=cfg.cifar_stem)
        if info.enabled and cfg.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # torch's stubs lack Module.to(device, memory_format=...), which torch accepts.
        self.model = self.model.to(device, memory_format=memory_format(device))  # type: ignore[call-overload]
        self.probe = OnlineProbe(self.model.representation_dim, num_classes,
                                 standardize=cfg.probe_standardize).to(device)
        # The modules that run forward: DDP wrappers when distributed (they average gradients),
        # compiled with --compile (a plain callable then).
        self.run_model: Callable[..., Any] = self.model
        self.run_probe: Callable[..., Any] = self.probe
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel
            self.run_model = ddp(self.model, device_ids=ids)
            self.run_probe = ddp(self.probe, device_ids=ids)
        if cfg.compile:
            self.run_model = torch.compile(self.run_model)
        self.criterion = build_criterion(cfg.method, **cfg.loss)
        self.peak_lr = scaled_lr(cfg.lr, cfg.batch_size)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, lr=self.peak_lr,
                                         weight_decay=cfg.weight_decay, momentum=cfg.momentum)
        self.probe_optimizer = torch.optim.AdamW(self.probe.parameters(), lr=cfg.probe_lr,
                                                 weight_decay=0.0)
        self.epoch = 0          # the epoch in progress
        self.batch = 0          # batches of that epoch already done
        self.step = 0           # global step
        self.epoch_sums: dict[str, float] = {}

    def state_dict(self, cfg: TrainConfig) -> dict:
        return {"config": cfg.to_dict(), "model": self.model.state_dict(),
                "probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict(),
                "probe_optimizer": self.probe_optimizer.state_dict(), "epoch": self.epoch,
                "batch": self.batch, "step": self.step, "epoch_sums": self.epoch_sums,
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.epoch_sums = dict(state["epoch_sums"])
        torch.set_rng_state(state["torch_rng"])


def _save(cfg: TrainConfig, state: TrainState, store: RunWriter, rdir: Path) -> None:
    """Checkpoint, once every metric logged so far is in the store: a checkpoint never runs
    ahead of the store, so a resume from it recomputes whatever a kill lost."""
    store.flush()
    path = rdir / ckpt.CHECKPOINT
    size = ckpt.save(ckpt.stamp(state.state_dict(cfg), cfg), path, keep_previous=True)
    store.log_artifact(cfg.run_id, "checkpoint", str(path), size=size)


def _restore(cfg: TrainConfig, device: torch.device, num_classes: int,
             info: distributed.DistInfo, rdir: Path) -> TrainState:
    """The training state: from the latest usable checkpoint of this run, else fresh.

    A checkpoint of another run, or one that could run code, stops the run (one line naming the
    file). A damaged one (truncated, empty, random bytes, wrong shapes) is reported in one line
    and the previous checkpoint is tried, then a fresh start: never a crash loop.
    """
    warn = _warn if info.is_main else (lambda message: None)
    latest = rdir / ckpt.CHECKPOINT
    for path in (latest, ckpt.previous_of(latest)):
        if not path.exists():
            continue
        state = TrainState(cfg, device, num_classes, info)
        try:
            payload = ckpt.load(path, map_location=device)
            ckpt.check_owner(payload, path, cfg)
            state.load_state_dict(payload)
        except ckpt.DamagedCheckpoint as err:
            warn(f"{err}: skipping it")
            continue
        except torch.OutOfMemoryError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            warn(f"{path} does not fit run {cfg.run_id} ({one_line(err)[:200]}): skipping it")
            continue
        if path != latest:
            warn(f"resuming run {cfg.run_id} from the previous checkpoint {path} "
                 f"(epoch {state.epoch + 1}, step {state.step})")
        return state
    if latest.exists() or ckpt.previous_of(latest).exists():
        warn(f"no usable checkpoint in {rdir}: starting run {cfg.run_id} from scratch")
    return TrainState(cfg, device, num_classes, info)


def _warn(message: str) -> None:
    """One line on stderr (a worker's stderr is its attempt log)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, store: RunWriter, device: torch.device, train_ds, test_ds,
           rdir: Path, stop: _StopFlag, show_progress: bool, info: distributed.DistInfo,
           after_epoch: EpochGate | None = None) -> tuple[RunStatus, str | None]:
    """Trains to the end or to a stop; returns the run's status and, when pruned, why."""
    from sslbench.data import iterate_batches, num_batches
    from sslbench.data.augment import build_augment, eval_transform, probe_view
    from sslbench.data.registry import probe_augment_of

    state = _restore(cfg, device, train_ds.num_classes, info, rdir)
    # Points written past the checkpoint before a kill are recomputed from here on.
    store.truncate_metrics(cfg.run_id, state.step)
    local_batch = cfg.batch_size // info.world_size
    aug1, aug2 = build_augment(cfg.augment, image_size=cfg.image_size, mean=train_ds.mean,
                               std=train_ds.std)
    aug1, aug2 = aug1.to(device), aug2.to(device)
    probe_aug = (None if cfg.probe_view == "views" else probe_view(
        probe_augment_of(cfg.dataset), image_size=cfg.image_size, mean=train_ds.mean,
        std=train_ds.std).to(device))
    to_eval = eval_transform(image_size=cfg.image_size, mean=test_ds.mean, std=test_ds.std)
    per_epoch = num_batches(train_ds, local_batch, drop_last=True, world_size=info.world_size)
    total = per_epoch * cfg.epochs
    warmup = per_epoch * cfg.warmup_epochs
    generator = torch.Generator(device=device)
    pending: dict[int, dict[str, float]] = {}
    window = _Window()
    with _progress(show_progress, total, state.step, cfg.batch_size) as bar:
        def sync() -> None:  # the steps read are logged at once (into the writer's buffer)
            _sync(state, window, pending, cfg.log_every, bar)
            _log_pending(store, cfg.run_id, pending, epoch=state.epoch + 1)

        while state.epoch < cfg.epochs:
            started = time.perf_counter()
            images_seen = 0
            batches = iterate_batches(train_ds, local_batch, shuffle=True, drop_last=True,
                                      seed=cfg.seed, epoch=state.epoch,
                                      num_workers=cfg.num_workers,
                                      pin_memory=device.type == "cuda",
                                      rank=info.rank, world_size=info.world_size)
            for images, labels in islice(batches, state.batch, None):
                lr = lr_at(state.step, total_steps=total, warmup_steps=warmup,
                           peak_lr=state.peak_lr)
                set_lr(state.optimizer, lr)
                if cfg.probe_schedule == "cosine":  # the same shape, from the probe's own peak
                    set_lr(state.probe_optimizer, cfg.probe_lr * lr_at(
                        state.step, total_steps=total, warmup_steps=warmup, peak_lr=1.0))
                generator.manual_seed(step_seed(cfg.seed, state.step, info.rank))
                try:
                    with deferred_finite_checks():  # the loss is checked at each sync instead
                        keys, row = _step(state, images, labels, (aug1, aug2, probe_aug),
                                          generator, device)
                except (NonFiniteEmbeddingsError, torch.linalg.LinAlgError):
                    sync()  # a NaN loss earlier in the window made them: name it, the cause
                    raise
                samples = len(labels) * (2 if probe_aug is None else 1)
                window.add(_Entry(state.step, lr, samples, keys), row)
                state.step += 1
                state.batch += 1
                images_seen += len(images)
                bar.advance(state.epoch)
                if state.step % cfg.log_every == 0:
                    sync()
                # Under torchrun the stop flag is a collective: ask at sync points only.
                asked = not info.enabled or state.step % cfg.log_every == 0
                if asked and distributed.broadcast(stop.requested, info):
                    sync()  # before the checkpoint: a NaN loss fails the run, is never saved
                    if info.is_main:
                        _save(cfg, state, store, rdir)
                    return RunStatus.INTERRUPTED, None
            sync()  # every step of the epoch checked and summed before it is evaluated, saved
            elapsed = time.perf_counter() - started
            top1 = math.nan
            if info.is_main:
                test_batches = iterate_batches(test_ds, 512, shuffle=False, drop_last=False)
                top1 = probe_accuracy(state.model.backbone, state.probe, test_batches, to_eval,
                                      device)
            metrics = _epoch_metrics(state, top1, images_seen * info.world_size, elapsed)
            pending[state.step] = metrics
            bar.epoch_done(top1)
            state.epoch += 1
            state.batch = 0
            state.epoch_sums = {}
            _log_pending(store, cfg.run_id, pending, epoch=state.epoch)
            if info.is_main:
                _save(cfg, state, store, rdir)
            store.heartbeat(cfg.run_id)
            distributed.barrier(info)
            if after_epoch is not None and state.epoch < cfg.epochs:
                why = after_epoch(state.epoch, metrics) if info.is_main else None
                why = distributed.broadcast(why, info)
                if why is not None:
                    return RunStatus.PRUNED, why
    if info.is_main:
        _export_backbone(cfg, state, store, rdir)
    return RunStatus.COMPLETED, None


def _step(state: TrainState, images, labels, augments, generator,
          device) -> tuple[tuple[str, ...], torch.Tensor]:
    """One optimisation step. ``augments``: the two views' pipelines and the online probe's own
    view (None: the probe learns from the two views). Returns the criterion's term names and one
    row on the device: those terms, then the probe's loss and its count of correct predictions,
    in float64 (exact for float32 terms and for counts). Nothing here reads a device value: see
    :class:`_Window`.
    """
    from sslbench.device import autocast, memory_format, to_device

    aug1, aug2, probe_aug = augments
    x = to_device(images, device)
    labels = labels.to(device, non_blocking=True)
    fmt = memory_format(device)
    v1 = aug1(x, generator).contiguous(memory_format=fmt)
    v2 = aug2(x, generator).contiguous(memory_format=fmt)
    with autocast(device):
        h, z = state.run_model(torch.cat([v1, v2]))
    z1, z2 = z.chunk(2)
    out = state.criterion(z1.float(), z2.float())
    if probe_aug is None:
        probe_loss, correct = state.run_probe(h, torch.cat([labels, labels]))
    else:  # drawn after the two views: they, and so the backbone's training, are unchanged
        view = probe_aug(x, generator).contiguous(memory_format=fmt)
        probe_loss, correct = state.run_probe(encode(state.model.backbone, view, device),
                                              labels)
    state.optimizer.zero_grad(set_to_none=True)
    state.probe_optimizer.zero_grad(set_to_none=True)
    (out["loss"] + probe_loss).backward()
    state.optimizer.step()
    state.probe_optimizer.step()
    values = [*out.values(), probe_loss, correct]
    row = torch.cat([v.detach().to(torch.float64).reshape(1) for v in values])
    return tuple(out), row


class _Entry(NamedTuple):
    """What the host knows of a step without asking the device."""

    step: int
    lr: float
    samples: int  # the probe's samples: both views of the batch, or its own view
    keys: tuple[str, ...]  # the criterion's terms, in the order of the step's row


class _Window:
    """The values of the steps since the last sync, left on the device.

    Reading a device value on the host (``float(t)``, ``if t:``, ``t.item()``) waits until the
    device has run everything queued before it: once per step, that stalls a GPU every step.
    Each step leaves its row here instead, and :func:`_sync` moves all of them to the host in
    one transfer -- every ``log_every`` steps, at the end of an epoch, before a checkpoint --
    and checks them for NaN there. The window holds at most one epoch of small rows.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._rows: list[torch.Tensor] = []

    def add(self, entry: _Entry, row: torch.Tensor) -> None:
        self._entries.append(entry)
        self._rows.append(row)

    def drain(self) -> list[tuple[_Entry, list[float]]]:
        """Every step's values as Python floats, oldest first; the window is emptied."""
        if not self._rows:
            return []
        flat = torch.cat(self._rows).tolist()  # the one device-to-host sync of the window
        out, at = [], 0
        for entry, row in zip(self._entries, self._rows):
            out.append((entry, flat[at:at + row.numel()]))  # numel: host metadata, no sync
            at += row.numel()
        self._entries, self._rows = [], []
        return out


def _sync(state: TrainState, window: _Window, pending: dict[int, dict[str, float]], log_every: int,
          bar: _progress) -> None:
    """Bring the window's steps to the host, in step order: stop at a non-finite loss, add each
    step to the epoch sums, keep the steps that are logged for the next flush, show the loss.

    The host arithmetic is the same, in the same order, as when every step was read at once, so
    the epoch means, the logged values and the checkpoint's ``epoch_sums`` are bit for bit
    those of a run that synced every step."""
    drained = window.drain()
    if not drained:
        return
    span = f"{drained[0][0].step}-{drained[-1][0].step}"
    terms: dict[str, float] = {}
    for entry, values in drained:
        terms = _terms(entry, values)
        _check_finite(entry, terms, span)
        for key, value in terms.items():
            state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
        state.epoch_sums["_n"] = state.epoch_sums.get("_n", 0.0) + 1
        if entry.step % log_every == 0:
            pending[entry.step] = terms
    bar.show_loss(terms["loss"])


def _terms(entry: _Entry, values: list[float]) -> dict[str, float]:
    """One step's terms as they are logged: criterion terms, probe loss and top-1, lr."""
    *criterion, probe_loss, correct = values
    terms = dict(zip(entry.keys, criterion))
    terms["probe_loss"] = probe_loss
    terms["probe_train_top1"] = 100.0 * correct / entry.samples
    terms["lr"] = entry.lr
    return terms


def _check_finite(entry: _Entry, terms: dict[str, float], span: str) -> None:
    """Fail at the first non-finite loss, naming its step and terms; ``span``: the steps that
    sync read (the NaN may have been found a few steps after it happened)."""
    if math.isfinite(terms["loss"]):
        return
    bad = [k for k in entry.keys if not math.isfinite(terms[k])]
    raise NonFiniteLoss(f"loss became non-finite at step {entry.step} (terms: {', '.join(bad)}; "
                        f"found checking steps {span}): lower --lr or check the loss weights")


def _epoch_metrics(state: TrainState, top1: float, images: int, elapsed: float) -> dict[str, float]:
    n = max(state.epoch_sums.get("_n", 0.0), 1.0)
    means = {f"epoch_{k}": v / n for k, v in state.epoch_sums.items()
             if k not in ("_n", "lr")}
    return {**means, "online_top1": top1, "epoch": float(state.epoch + 1),
            "images_per_s": images / elapsed if elapsed > 0 else math.nan}


def _log_pending(store: RunWriter, run_id: str, pending: dict[int, dict[str, float]],
                 epoch: int | None = None) -> None:
    for step, metrics in sorted(pending.items()):
        clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if clean:
            store.log_metrics(run_id, step, clean, epoch=epoch)
    pending.clear()


def _export_backbone(cfg: TrainConfig, state: TrainState, store: RunWriter, rdir: Path) -> None:
    """A backbone-only file that evaluation consumes (like the official VICReg code)."""
    path = rdir / ckpt.BACKBONE
    size = ckpt.save(ckpt.stamp({"config": cfg.to_dict(),
                                 "backbone": state.model.backbone.state_dict()}, cfg), path)
    store.log_artifact(cfg.run_id, "backbone", str(path), size=size, sha256=ckpt.sha256_of(path))


class _progress:
    """A rich progress bar with loss, probe accuracy and images/s (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int, batch_size: int):
        self.enabled, self.total, self.done, self.batch_size = enabled, total, done, batch_size
        self.top1 = self.loss = float("nan")

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.done,
                                            epoch=0, info="")
            self._t0, self._n0 = time.perf_counter(), self.done
        return self

    def advance(self, epoch: int) -> None:
        if not self.enabled:
            return
        self.done += 1
        rate = self.batch_size * (self.done - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, advance=1, epoch=epoch + 1,
                         info=f"loss {self.loss:.4f}  probe {self.top1:.1f}%  "
                              f"{rate:.0f} img/s")

    def show_loss(self, loss: float) -> None:
        """The loss shown from now on: the latest one read, at a sync point (see _Window)."""
        self.loss = loss

    def epoch_done(self, top1: float) -> None:
        self.top1 = top1

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
