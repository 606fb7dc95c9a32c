"""The main job on built-in data, in minutes on a CPU: generate tagged synthetic music, preprocess it
into a store, pre-train the `tiny` preset on it with the online linear probe, then probe the frozen
encoder on held-out tracks against a random-initialised encoder (the paper's linear evaluation).

`run_demo` runs the steps in order; each step is its own function and the result holds every path
(music, store, run directory, model, evaluation report) and the headline numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clmr.config import Config, load_config

DEMO_TRACKS = 600
DEMO_SECONDS = 6.0
DEMO_SEED = 0


def _say(line: str) -> None:
    print(line, flush=True)


def generate_music(out: Path, config: Config, tracks: int, seconds: float, seed: int):
    """Step 1: a seeded set of tagged synthetic pieces (audio + tags.csv with train/valid/test splits)."""
    from clmr.data.synthetic import generate

    _say(f"[1/4] generating {tracks} pieces of {seconds:g} s at {config.sample_rate} Hz in {out}")
    return generate(out, tracks, seconds=seconds, seed=seed, sample_rate=config.sample_rate)


def build_store(music, out: Path, config: Config, progress: bool):
    """Step 2: decode once into a memory-mapped store at the config's sample rate, with the tags; a
    previous demo's store is replaced (the music was just regenerated, maybe with other settings)."""
    from clmr.data import preprocess

    _say(f"[2/4] preprocessing into {out}")
    return preprocess(
        music.root,
        out,
        labels=music.tags_csv,
        sample_rate=config.sample_rate,
        min_length=config.crop_length,
        progress=progress,
        overwrite=True,
    )


def pretrain_tiny(store_dir: Path, run_dir: Path, config: Config, progress: bool | None) -> dict[str, Any]:
    """Step 3: contrastive pre-training with the online probe; a previous demo run is replaced (only the
    files a run writes are removed: anything else in the folder stays)."""
    from clmr.train import pretrain
    from clmr.train.run import clear_run

    kept = clear_run(run_dir)
    if kept:
        _say(f"      {run_dir}: left {len(kept)} file(s) clmr did not write in place (e.g. {kept[0]})")
    _say(
        f"[3/4] pre-training preset '{config.preset}' (SampleCNN width {config.model.width}, "
        f"{config.model.n_blocks} pooled blocks, {config.crop_length}-sample crops) for "
        f"{config.trainer.max_epochs} epochs into {run_dir}"
    )
    return pretrain(store_dir, run_dir, config, progress=progress)


def probe_against_random(model: Path, store_dir: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Step 4: linear probe of the frozen encoder, and of a random-initialised one, on the test split."""
    from clmr.evaluate import evaluate

    _say(f"[4/4] linear probe on held-out tracks, pre-trained vs random-initialised encoder, into {out}")
    return evaluate(model, store_dir, out, head="linear", baseline="random", progress=progress)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """First/last validated epoch's losses and probe metric from the run's history."""
    history = [row for row in result["history"] if "valid/loss" in row]
    first, last = history[0], history[-1]
    probe_key = next((k for k in last if k.startswith("valid/probe_")), None)
    return {
        "epochs": result["epochs"],
        "steps": result["steps"],
        "train_loss_first": first.get("train/loss"),
        "train_loss_last": last.get("train/loss"),
        "valid_loss_first": first.get("valid/loss"),
        "valid_loss_last": last.get("valid/loss"),
        "probe_metric": probe_key.removeprefix("valid/probe_") if probe_key else None,
        "probe_first": first.get(probe_key) if probe_key else None,
        "probe_last": last.get(probe_key) if probe_key else None,
        "pairs_per_s": result["pairs_per_s"],
        "train_share": result["train_share"],
        "wall_s": result["wall_s"],
    }


def run_demo(
    out_dir: str | Path,
    *,
    tracks: int = DEMO_TRACKS,
    seconds: float = DEMO_SECONDS,
    seed: int = DEMO_SEED,
    overrides: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Generate -> preprocess -> pre-train (`tiny` preset, plus `overrides`) -> probe vs random, under
    `out_dir`. Returns the paths (`music`, `store`, `run_dir`, `model`, `eval_dir`), the summary of
    `summarise`, and the test-split ROC-AUC / PR-AUC of both probes.
    """
    out = Path(out_dir)
    # epoch-bound, never time-bound: the result is the same on a busy machine, only later
    config = load_config("tiny", overrides={"trainer.accelerator": "cpu", **(overrides or {})})
    music = generate_music(out / "music", config, tracks, seconds, seed)
    store_dir = out / "store"
    build_store(music, store_dir, config, progress=bool(progress))
    run_dir = out / "run"
    result = pretrain_tiny(store_dir, run_dir, config, progress)
    eval_dir = out / "eval"
    report = probe_against_random(result["model"], store_dir, eval_dir, progress=bool(progress))
    return {
        "music": Path(music.root),
        "store": store_dir,
        "run_dir": run_dir,
        "model": result["model"],
        "eval_dir": eval_dir,
        **summarise(result),
        "test_roc_auc": report["roc_auc_macro"],
        "test_pr_auc": report["pr_auc_macro"],
        "random_roc_auc": report["baseline"]["roc_auc_macro"],
        "random_pr_auc": report["baseline"]["pr_auc_macro"],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""

    def num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [
        f"trained {summary['epochs']} epochs ({summary['steps']} steps, {summary['pairs_per_s']:.0f} pairs/s "
        f"in the steps, {100 * summary['train_share']:.0f} % of {summary['wall_s'] / 60:.1f} min)",
        f"train loss      {num(summary['train_loss_first'])} (first epoch) -> {num(summary['train_loss_last'])} (last)",
        f"valid loss      {num(summary['valid_loss_first'])} -> {num(summary['valid_loss_last'])}",
    ]
    if summary["probe_metric"]:
        lines.append(
            f"online probe    valid {summary['probe_metric']} {num(summary['probe_first'])} -> "
            f"{num(summary['probe_last'])}"
        )
    lines += [
        "test probe (linear, held-out tracks)   ROC-AUC   PR-AUC",
        f"  pre-trained encoder                   {num(summary['test_roc_auc'])}    {num(summary['test_pr_auc'])}",
        f"  random-initialised encoder            {num(summary['random_roc_auc'])}    {num(summary['random_pr_auc'])}",
        f"model           {summary['model']}",
        f"store           {summary['store']}",
        f"report          {summary['eval_dir'] / 'report.md'}",
    ]
    return "\n".join(lines)
