"""A training run end to end: resolve the config, check the store and the run directory, set up Lightning
Fabric (devices, DDP, precision), train with `clmr.train.engine.Engine`, and report.

Run directory: `config.yaml`, `checkpoints/` (`last.ckpt` at every epoch end and at a stop,
`epochNNNN.ckpt` every `trainer.checkpoint_every` finished epochs, `best.ckpt` by valid loss),
`model.safetensors`, `logs/` (TensorBoard under `logs/tensorboard`, CSV under `logs/csv`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from clmr.config import Config, ConfigError, load_config, save_config
from clmr.errors import ClmrError
from clmr.files import LOCK, folder_lock, io_errors
from clmr.train.engine import CHECKPOINTS, MODEL_FILE

CONFIG_FILE = "config.yaml"


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


STATE_KEYS = ("epoch", "step", "model")  # what resuming reads from a checkpoint
TRAINER_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning's Trainer writes, never in ours


def trainer_checkpoint_version(path: Path) -> str | None:
    """The pytorch-lightning version named by `path` if Lightning's Trainer wrote it (clmr's run
    directories before its own engine, the reference's checkpoints), else None. Read from the archive's
    pickle opcodes, never unpickled."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"), None)
            data = archive.read(name) if name is not None else b""
        if TRAINER_KEY.encode() not in data:
            return None
        strings = [arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    after = strings[strings.index(TRAINER_KEY) + 1 :] if TRAINER_KEY in strings else []
    return after[0] if after else "unknown"


def refuse_trainer_checkpoint(path: Path) -> None:
    """A RunDirError if Lightning's Trainer wrote `path`: its training state (loops, callbacks) is not
    one this engine can continue, but its weights load as they are."""
    version = trainer_checkpoint_version(path)
    if version is not None:
        raise RunDirError(
            f"{path}: written by Lightning's Trainer (pytorch-lightning {version}: an earlier clmr or the "
            f"reference code), so it cannot be resumed; its weights load as they are: `clmr info "
            f"{shlex.quote(str(path))}`, `clmr.load_model({str(path)!r})`; to train on, start a new run "
            "with another --out"
        )


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
    refuse_trainer_checkpoint(path)
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
    missing = [key for key in STATE_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise RunDirError(f"{path}: not a checkpoint of `clmr pretrain` (no '{missing[0]}' entry)")
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no details"


def _check_resumable(ckpt_path: Path, ckpt: dict, config: Config, module, world_size: int) -> None:
    """A resumed run keeps its model and cannot stop before where it already is: a changed architecture
    (`--model.*`, `--supervised`, `--probe`), a `--max-epochs` below the epochs done, or another batch
    layout in the middle of an epoch is an error here, before the run's config.yaml is rewritten."""
    done, saved = int(ckpt["epoch"]), ckpt["model"]
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
            f"{ckpt_path}: the run has finished {done} epochs, past --max-epochs {limit}; "
            "pass a larger --max-epochs to continue it"
        )
    saved, layout = ckpt.get("layout"), {"batch_size": config.batch_size, "world_size": world_size}
    if int(ckpt.get("batch", 0)) > 0 and saved != layout:
        raise ConfigError(
            f"{ckpt_path}: the run stopped in the middle of epoch {done} with batch_size "
            f"{saved['batch_size']} on {saved['world_size']} process(es); resuming it with batch_size "
            f"{layout['batch_size']} on {layout['world_size']} would skip other samples than those "
            "trained on: resume with the run's --batch-size and devices"
        )


RUN_FILES = (
    CONFIG_FILE,
    MODEL_FILE,
    f"{CHECKPOINTS}/*.ckpt",
    "logs/csv/metrics.csv",
    "logs/tensorboard/events.out.tfevents.*",
)
"""What a run writes into its directory (glob patterns); `clear_run` removes these and nothing else."""


def clear_run(run_dir: str | Path) -> list[str]:
    """Delete what a `pretrain` run wrote into `run_dir` (its RUN_FILES, and their folders once empty) so
    the directory can hold a new run; any other file stays and is returned (relative paths)."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    for pattern in RUN_FILES:
        for path in root.glob(pattern):
            path.unlink()
    for folder in (f"{CHECKPOINTS}", "logs/csv", "logs/tensorboard", "logs"):
        with contextlib.suppress(OSError):
            (root / folder).rmdir()  # only when empty
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != LOCK)


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
    last = Path(run_dir) / CHECKPOINTS / "last.ckpt" if resume is True else Path(resume or "")
    if resume and last.is_file():
        refuse_trainer_checkpoint(last)  # before its config.yaml, whose keys may be another version's
    if resume and config_file is None and saved.is_file():
        config_file = saved
    return load_config(preset=preset, path=config_file, overrides=overrides)


def make_fabric(config: Config):
    """Lightning Fabric for the config's device settings; what Fabric refuses is a one-line ConfigError."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    t = config.trainer
    try:
        fabric = L.Fabric(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=t.precision,
        )
    except (MisconfigurationException, ValueError, ModuleNotFoundError) as err:
        settings = ", ".join(
            f"{k}={getattr(t, k)!r}" for k in ("accelerator", "devices", "strategy", "precision")
        )
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"config keys trainer.*: Lightning cannot run with {settings}: {problem}") from err
    on_cpu = fabric.device.type == "cpu"
    if t.sync_batchnorm and on_cpu:
        raise ConfigError(
            "config key 'trainer.sync_batchnorm' (--sync-batchnorm): torch's SyncBatchNorm needs GPUs; "
            "drop it on CPU (under DDP on CPU each process keeps its own BatchNorm statistics)"
        )
    return fabric


def pretrain(
    data: str | Path,
    out: str | Path,
    config: Config,
    *,
    resume: bool | str | Path | None = None,
    progress: bool | None = None,
    hooks: list | None = None,
) -> dict[str, Any]:
    """Pre-train (contrastive, or supervised if `config.supervised`) on the store `data` into run
    directory `out`. `hooks` are passed to the engine; `progress=False` switches the progress display
    off. Rank 0 holds the run directory's lock (`.clmr.lock`) while it writes it: a second `pretrain`
    into the same directory is refused at once. Returns paths, the step and epoch counts, the per-epoch history, throughput, the shares of
    wall time in training steps and validation, and the trained module."""
    import torch

    from clmr.train.data import check_batch, check_store, loaders
    from clmr.train.engine import Engine
    from clmr.train.logs import RunLog
    from clmr.train.modules import ContrastiveModule, SupervisedModule

    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: is a file; --out names the run directory")
    ckpt_path = resume_checkpoint(run_dir, resume)
    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None  # checked before any work
    if ckpt_path is None and _is_global_zero() and any((run_dir / CHECKPOINTS).glob("*.ckpt")):
        for held in sorted((run_dir / CHECKPOINTS).glob("*.ckpt"), key=lambda p: p.name != "last.ckpt"):
            refuse_trainer_checkpoint(held)  # not a run --resume could continue
        raise RunDirError(
            f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out"
        )
    store = check_store(data, config)
    fabric = make_fabric(config)
    fabric.launch()
    check_batch(store, config, fabric.world_size, data)
    if fabric.world_size > 1 and fabric.device.type == "cpu":
        # one process per device on CPU: share the cores instead of each process taking all of them
        per_node = max(1, fabric.world_size // config.trainer.num_nodes)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    if config.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    fabric.seed_everything(config.seed, verbose=False)
    n_classes = len(store.vocab) if store.task else None
    module_cls = SupervisedModule if config.supervised else ContrastiveModule
    module = module_cls(config, n_classes, store.task, store.vocab or None)
    if ckpt_path is not None:
        _check_resumable(ckpt_path, ckpt, config, module, fabric.world_size)
    resume_step = int(ckpt["step"]) if ckpt is not None else None
    del ckpt  # fabric.load reads it into the training state
    sync = config.trainer.sync_batchnorm
    if fabric.world_size > 1 and fabric.device.type == "cuda" and sync is not False:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)  # the reference's default
    with contextlib.ExitStack() as held:  # rank 0 holds the run directory from its first write to the end
        if fabric.is_global_zero:
            with io_errors(run_dir, RunDirError):
                run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(run_dir, "run directory"))
            save_config(config, run_dir / CONFIG_FILE)
        display = "off" if progress is False else "live"
        meta = {"store": str(Path(data).resolve()), "dataset": store.meta.get("dataset")}
        engine = Engine(
            fabric, module, config, run_dir, meta, display=display, hooks=hooks or [], label="pretrain"
        )
        if ckpt_path is not None:
            engine.restore(ckpt_path)
        log = RunLog(run_dir / "logs", resume_step, enabled=fabric.is_global_zero)
        train, valid = loaders(
            store, config, fabric.global_rank, fabric.world_size, fabric.device.type == "cuda"
        )
        try:
            engine.fit(train, valid, log)
        finally:
            log.close()
    return {
        "run_dir": run_dir,
        "model": run_dir / MODEL_FILE,
        "config": run_dir / CONFIG_FILE,
        **engine.summary(),
    }
