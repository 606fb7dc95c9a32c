"""A training run end to end: resolve the config, check the store, build the Lightning Trainer
(devices, DDP, precision, checkpoints, logs, progress), fit, and export the model.

Run directory: `config.yaml`, `checkpoints/` (`last.ckpt` every epoch and at a stop, `epochNNNN.ckpt`
every `trainer.checkpoint_every` finished epochs, `best.ckpt` by valid loss), `model.safetensors`,
`logs/` (TensorBoard under `logs/tensorboard`, CSV under `logs/csv`).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from clmr.config import Config, ConfigError, load_config, save_config
from clmr.errors import ClmrError
from clmr.files import atomic_open

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"


class RunDirError(ClmrError):
    """The run directory cannot be used as asked (already holds a run, or nothing to resume), or the
    checkpoint to resume from cannot be read."""


def _is_global_zero() -> bool:
    """Rank 0 of the whole job, known from the environment before any process group exists."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def resume_checkpoint(run_dir: str | Path, resume: bool | str | Path | None) -> Path | None:
    """The checkpoint to resume from: `resume` itself if it is a path, `RUN_DIR/checkpoints/last.ckpt` if
    it is True, None if it is falsy. `resume=True` on a run directory without any checkpoint starts the
    run (so that every slot of a job array can run the same command), with a line on stderr."""
    if not resume:
        return None
    path = Path(run_dir) / CHECKPOINTS / "last.ckpt" if resume is True else Path(resume)
    if resume is True and not any((Path(run_dir) / CHECKPOINTS).glob("*.ckpt")):
        if _is_global_zero():
            print(f"{run_dir}: no checkpoint to resume yet: starting the run", file=sys.stderr, flush=True)
        return None
    if not path.is_file():
        raise RunDirError(f"{path}: no checkpoint to resume from")
    return path


LIGHTNING_KEYS = ("epoch", "global_step", "state_dict")  # what resuming reads from a checkpoint


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents (tensors memory-mapped), read with `weights_only=True`. A file that is not
    a readable checkpoint (truncated, corrupt, something else) or that holds pickled Python objects (which
    clmr never writes and never unpickles) is a RunDirError naming it, not torch's traceback at restore."""
    import pickle
    import zipfile

    import torch

    def unreadable(why: str) -> RunDirError:
        return RunDirError(
            f"{path}: not a readable checkpoint ({why}); it may be truncated or corrupt: resume from "
            "another one with --resume PATH (e.g. the run's checkpoints/epochNNNN.ckpt or best.ckpt)"
        )

    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise unreadable("empty file" if size == 0 else f"{size} bytes, not the zip archive torch saves")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise unreadable(f"{type(err).__name__}: {_first_line(err)}") from err
        try:  # objects beyond tensors, or damaged data: the archive's checksums tell which
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as zip_err:
            raise unreadable(f"{type(zip_err).__name__}: {_first_line(zip_err)}") from err
        if bad is not None:
            raise unreadable(f"damaged entry '{bad}'") from err
        raise RunDirError(
            f"{path}: holds pickled Python objects ({_first_line(err)}); clmr writes only tensors and plain "
            "values and will not unpickle a checkpoint, which could run code"
        ) from err
    except Exception as err:
        raise unreadable(f"{type(err).__name__}: {_first_line(err)}") from err
    missing = [key for key in LIGHTNING_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise RunDirError(f"{path}: not a checkpoint of `clmr pretrain` (no '{missing[0]}' entry)")
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no details"


def _check_resumable(ckpt_path: Path, ckpt: dict, config: Config, module) -> None:
    """A resumed run keeps its model and cannot stop before where it already is: a changed architecture
    (`--model.*`, `--supervised`, `--probe`) or a `--max-epochs` below the checkpoint's epoch is an error
    here, before the run's config.yaml is rewritten with the new settings."""
    done, saved = int(ckpt["epoch"]), ckpt["state_dict"]
    own = module.state_dict()
    for key in sorted(own.keys() | saved.keys()):
        before = tuple(saved[key].shape) if key in saved else "absent"
        now = tuple(own[key].shape) if key in own else "absent"
        if before != now:
            raise ConfigError(
                f"{ckpt_path}: the run's model differs from this config's ('{key}': {before} in the "
                f"checkpoint, {now} now); a resumed run keeps its model, so leave the --model.*, "
                "--supervised and --probe settings as the run has them"
            )
    limit = config.trainer.max_epochs
    if limit != -1 and done > limit:
        raise ConfigError(
            f"{ckpt_path}: the run is at epoch {done} (counted from 0), past --max-epochs {limit}; "
            "pass a larger --max-epochs to continue it"
        )


def resolve_config(
    run_dir: str | Path,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool | str | Path | None = None,
) -> Config:
    """The config of a run. A resumed run starts from its own `config.yaml` (unless `config_file` is given);
    overrides such as a larger `--max-epochs` still apply."""
    saved = Path(run_dir) / CONFIG_FILE
    if resume and config_file is None and saved.is_file():
        config_file = saved
    return load_config(preset=preset, path=config_file, overrides=overrides)


def _progress_callbacks(config: Config, progress: bool | None) -> tuple[list, bool]:
    from lightning.pytorch.callbacks import RichProgressBar

    from clmr.train.callbacks import PlainProgress

    live = sys.stdout.isatty() if progress is None else progress
    if live:
        return [RichProgressBar()], True
    return [PlainProgress(config.trainer.log_every_n_steps)], False


def build_trainer(
    config: Config,
    run_dir: Path,
    callbacks: list,
    *,
    progress: bool | None = None,
    resume_step: int | None = None,
):
    """A Lightning Trainer with our checkpoint layout, loggers, progress display and device settings."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from clmr.train.callbacks import MidEpochResume, PeriodicCheckpoint, max_time_timer

    t = config.trainer
    ckpt_dir = run_dir / CHECKPOINTS
    checkpoints = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False),
        PeriodicCheckpoint(  # its own state key: with every epoch, it triggers as the one above
            dirpath=ckpt_dir,
            filename="epoch{epoch:04d}",
            auto_insert_metric_name=False,
            every_n_epochs=t.checkpoint_every,
            save_top_k=-1,
        ),
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor="valid/loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        ),
    ]
    extra = [LearningRateMonitor(logging_interval="step"), MidEpochResume()]
    if config.supervised:
        # checked after each validation only: a --max-time / --max-steps stop mid-epoch has no new valid
        # loss, and counting it would use up patience (or fail, before the first validation)
        extra.append(
            EarlyStopping(
                monitor="valid/loss",
                mode="min",
                patience=t.early_stopping_patience,
                check_on_train_epoch_end=False,
            )
        )
    shown, live = _progress_callbacks(config, progress)
    logs = run_dir / "logs"
    if t.max_time:  # a fresh budget for each invocation, resumed or not (one SLURM slot each)
        extra.append(max_time_timer(t.max_time))
    try:
        return _trainer(
            L, config, run_dir, logs, [*callbacks, *extra, *shown, *checkpoints], live, resume_step
        )
    except (
        MisconfigurationException,
        ValueError,
        ModuleNotFoundError,
    ) as err:  # what Lightning raises for them
        # Lightning's own check of the device settings: one line naming the keys, not a traceback
        settings = ", ".join(
            f"{k}={getattr(t, k)!r}" for k in ("accelerator", "devices", "strategy", "precision")
        )
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"config keys trainer.*: Lightning cannot run with {settings}: {problem}") from err


def _csv_logger(logs: Path, resume_step: int | None):
    """Lightning's CSVLogger (a fresh run starts a new metrics.csv), except that a run resumed from a
    checkpoint saved at `resume_step` keeps the rows up to that step and appends to them: rows logged
    after the checkpoint would otherwise appear twice (Lightning itself deletes the file)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    if resume_step is None:
        return CSVLogger(logs, name="", version="csv")

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if path.is_file():
                with open(path, newline="") as f:
                    reader = csv.DictReader(f)
                    rows, keys = list(reader), reader.fieldnames or []
                kept = [r for r in rows if not r.get("step") or int(r["step"]) <= resume_step]
                if len(kept) < len(rows):
                    with atomic_open(path, "w", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=keys)
                        writer.writeheader()
                        writer.writerows(kept)
                self.metrics_keys = sorted(keys)

    class ResumableCSVLogger(CSVLogger):
        @property
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return ResumableCSVLogger(logs, name="", version="csv")


def _trainer(
    L, config: Config, run_dir: Path, logs: Path, callbacks: list, live: bool, resume_step: int | None
):
    from lightning.pytorch.loggers import TensorBoardLogger

    t = config.trainer
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        sync_batchnorm=t.sync_batchnorm,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time=None,  # build_trainer adds a SessionTimer: Lightning's would count earlier invocations
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        logger=[
            TensorBoardLogger(logs, name="", version="tensorboard"),
            _csv_logger(logs, resume_step),
        ],
        callbacks=callbacks,
        enable_progress_bar=live,
        enable_model_summary=live,
        use_distributed_sampler=False,  # our EpochSampler shards by rank itself, keyed by (seed, epoch)
        default_root_dir=run_dir,
    )


def _quiet_lightning() -> None:
    """Hide Lightning's advice that does not apply to these runs."""
    import logging

    class NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            return "Tip:" not in message and not message.startswith(("TPU available", "HPU available"))

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        info = logging.getLogger(name)
        if not any(type(f).__name__ == "NoTips" for f in info.filters):
            info.addFilter(NoTips())
    for pattern in (
        r".*does not have many workers.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
        r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
        # logged values are already global (NT-Xent gathers; the probe metric is computed on gathered data)
        r".*when logging on epoch level in distributed setting.*",
        r".*all_gather is deprecated.*",
        # a resumed run writes into its own checkpoint folder; a fresh run refuses a used one (RunDirError)
        r".*Checkpoint directory .* exists and is not empty.*",
        # a run stopped mid-epoch resumes there: MidEpochResume and EpochSampler.resume
        r".*resuming from a checkpoint that ended before the epoch ended.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def pretrain(
    data: str | Path,
    out: str | Path,
    config: Config,
    *,
    resume: bool | str | Path | None = None,
    progress: bool | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Pre-train (contrastive, or supervised if `config.supervised`) on the store `data` into run
    directory `out`. `callbacks` are extra Lightning callbacks. Returns paths, the step count, the
    per-epoch history, throughput and the trained LightningModule."""
    import lightning as L
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from clmr.train.callbacks import ExportModel, FlushLogs, History, Throughput
    from clmr.train.data import TrainData, check_batch, open_store
    from clmr.train.modules import ContrastiveModule, SupervisedModule

    _quiet_lightning()
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: is a file; --out names the run directory")
    ckpt_path = resume_checkpoint(run_dir, resume)
    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None  # checked before any work
    if ckpt_path is None and _is_global_zero() and any((run_dir / CHECKPOINTS).glob("*.ckpt")):
        raise RunDirError(
            f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out"
        )
    store = open_store(data, config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    n_classes = len(store.vocab) if store.task else None
    module_cls = SupervisedModule if config.supervised else ContrastiveModule
    module = module_cls(config, n_classes, store.task, store.vocab or None)
    history, throughput = History(), Throughput()
    meta = {"store": str(Path(data).resolve()), "dataset": store.meta.get("dataset")}
    own = [throughput, ExportModel(run_dir / MODEL_FILE, meta), FlushLogs(), history]
    resume_step = int(ckpt["global_step"]) if ckpt is not None else None
    trainer = build_trainer(
        config, run_dir, [*own, *(callbacks or [])], progress=progress, resume_step=resume_step
    )
    check_batch(store, config, trainer.world_size, data)
    if config.trainer.sync_batchnorm and trainer.accelerator.__class__.__name__ == "CPUAccelerator":
        raise ConfigError(
            "config key 'trainer.sync_batchnorm' (--sync-batchnorm): torch's SyncBatchNorm needs GPUs; "
            "drop it on CPU"
        )
    if trainer.world_size > 1 and trainer.accelerator.__class__.__name__ == "CPUAccelerator":
        # one process per device on CPU: share the cores instead of each process taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // trainer.num_devices))
    if ckpt_path is not None:
        _check_resumable(ckpt_path, ckpt, config, module)
    del ckpt  # Lightning loads the checkpoint itself
    if trainer.is_global_zero:
        save_config(config, run_dir / CONFIG_FILE)
    try:
        trainer.fit(module, datamodule=TrainData(store, config), ckpt_path=ckpt_path, weights_only=True)
    except MisconfigurationException as err:
        # e.g. resuming a run that is already past --max-epochs: one line, not a traceback
        raise ConfigError(f"{ckpt_path or run_dir}: {str(err).strip()}") from err
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1); callers see the interruption
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    return {
        "run_dir": run_dir,
        "model": run_dir / MODEL_FILE,
        "config": run_dir / CONFIG_FILE,
        "global_zero": trainer.is_global_zero,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "history": history.epochs,
        "pairs_per_s": throughput.pairs_per_s,
        "data_wait_share": throughput.wait_share,
        "module": module,
    }
