"""The fast step: `trainer.compile` gives the eager losses and resumes to identical weights, the step's
values are read from the device once per log interval without changing what is logged, a non-finite
loss still stops before a checkpoint, and the optimiser is the reference's Adam."""

import pytest
import torch
from safetensors.torch import load_file

from clmr.config import load_config
from clmr.train import NonFiniteLossError, pretrain
from clmr.train.modules import ContrastiveModule, build_optimizer
from clmr.train.speed import StepValues

TINY = {
    "model.width": 1 / 16,
    "model.n_blocks": 5,  # 729-sample crops
    "batch_size": 4,
    "trainer.accelerator": "cpu",
    "trainer.devices": 1,
    "trainer.num_workers": 0,
    "trainer.checkpoint_every": None,
}


def config(**overrides):
    return load_config("tiny", overrides={**TINY, **overrides})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_compiled_and_eager_steps_give_the_same_losses_and_gradients():
    """Three Adam steps of the tiny contrastive module (augmentation and probe on); at each, the eager and
    the compiled encoder + projector see the same weights and give the same loss and gradients. (Whole
    trajectories are not compared: Adam's first updates are about +-lr whatever a gradient's size, so a
    rounding difference in a near-zero gradient moves a weight by up to 2 lr.)"""
    torch.manual_seed(0)
    module = ContrastiveModule(config(**{"trainer.compile": True}), 3, "multilabel")
    compiled = module.compiled
    assert set(compiled) == {"encoder", "projector"}
    assert all(".orig_mod" not in key and "compiled" not in key for key in module.state_dict())
    optimizer, _ = build_optimizer(module, module.config)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    data = torch.Generator().manual_seed(1)
    for step in range(3):
        batch = (torch.randn(4, 729, generator=data), torch.randn(4, 729, generator=data))
        batch += ((torch.rand(4, 3, generator=data) > 0.5).float(),)
        out = {}
        for name, parts in (("eager", {}), ("compiled", compiled)):
            module.compiled = parts
            torch.manual_seed(step)
            loss, _ = module.training_step(batch, step, 0)
            out[name] = (loss.detach(), torch.autograd.grad(loss, params))
        assert float(out["compiled"][0]) == pytest.approx(float(out["eager"][0]), abs=1e-4), step
        for eager, fast in zip(out["eager"][1], out["compiled"][1], strict=True):
            torch.testing.assert_close(fast, eager, rtol=1e-3, atol=1e-5)
        for p, grad in zip(params, out["compiled"][1], strict=True):
            p.grad = grad
        optimizer.step()


def test_a_compiled_run_resumes_to_the_uninterrupted_weights(labelled_store, tmp_path):
    c = {"trainer.compile": True, "trainer.max_epochs": 2}
    whole = pretrain(labelled_store.path, tmp_path / "whole", config(**c), progress=False)
    steps = whole["steps"]
    assert steps >= 3
    run = tmp_path / "run"
    pretrain(labelled_store.path, run, config(**c, **{"trainer.max_steps": steps - 1}), progress=False)
    resumed = pretrain(labelled_store.path, run, config(**c), resume=True, progress=False)
    assert resumed["steps"] == steps
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_values_are_read_once_per_log_interval_and_log_the_same(labelled_store, tmp_path, monkeypatch):
    reads = []
    read = StepValues.read

    def counted(self):
        rows = read(self)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(StepValues, "read", counted)
    runs = {}
    for every in (1, 3):
        reads.clear()
        c = config(**{"trainer.max_steps": 12, "trainer.log_every_n_steps": every, "trainer.max_epochs": -1})
        runs[every] = pretrain(labelled_store.path, tmp_path / f"every{every}", c, progress=False)
        assert sum(reads) == 12  # every step's values are read, once
        if every == 3:
            assert sum(1 for n in reads if n) < 12  # in fewer reads than steps
    assert runs[1]["steps"] == runs[3]["steps"] == 12
    history = [[row["train/loss"] for row in runs[every]["history"]] for every in (1, 3)]
    assert history[0] == pytest.approx(history[1], abs=1e-6) and len(history[0]) >= 2


def test_a_non_finite_loss_read_at_a_stop_writes_no_checkpoint(labelled_store, tmp_path):
    """The loss of a step in the middle of an epoch turns NaN; the read before the stop's checkpoint
    raises, naming that step, and the last checkpoint stays the one of the last epoch end."""

    class Poison:
        def on_train_batch_start(self, engine):
            if engine.state["step"] == 3:
                with torch.no_grad():
                    engine.module.encoder.sequential[0][0].weight.fill_(float("nan"))

    run = tmp_path / "run"
    c = config(**{"trainer.max_steps": 4, "trainer.max_epochs": -1, "trainer.log_every_n_steps": 100})
    n_batches = len(labelled_store.split_indices("train")) // 4
    assert n_batches == 2  # step 3 is the second batch of epoch 1; the run stops after it
    with pytest.raises(NonFiniteLossError, match=r"at step 3 \(epoch 1\)"):
        pretrain(labelled_store.path, run, c, hooks=[Poison()], progress=False)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["step"] == 2 and all(torch.isfinite(v).all() for v in last["model"].values())


def test_the_optimiser_is_plain_adam_on_cpu():
    """The reference's Adam (no weight decay); torch's fused kernel only where the parameters are on CUDA."""
    module = ContrastiveModule(config(), 3, "multilabel")
    optimizer, scheduler = build_optimizer(module, module.config)
    assert type(optimizer) is torch.optim.Adam and scheduler is None
    assert not optimizer.defaults["fused"] and optimizer.defaults["weight_decay"] == 0.0
    assert [g["lr"] for g in optimizer.param_groups] == [module.config.optim.lr, module.config.optim.probe_lr]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adam_is_fused_on_cuda():
    module = ContrastiveModule(config(), 3, "multilabel").cuda()
    optimizer, _ = build_optimizer(module, module.config)
    assert optimizer.defaults["fused"] is True


def test_loader_workers_are_sized_from_the_cores_and_the_device(monkeypatch):
    """CPU: at most 4, a core left to training (as before); feeding a GPU: up to 8; several training
    processes on one machine share its cores."""
    import os

    from clmr.train.data import default_workers

    for cores, cpu, gpu, gpu_of_4 in ((1, 0, 0, 0), (2, 1, 1, 0), (16, 4, 8, 3), (64, 4, 8, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert (default_workers(), default_workers(gpu=True), default_workers(True, 4)) == (
            cpu,
            gpu,
            gpu_of_4,
        )


def test_step_values_read_in_order_stop_at_a_non_finite_loss_and_pace_the_display(monkeypatch):
    from clmr.train import speed

    values = StepValues()
    assert values.read() == [] and not values.due_for_display()
    for step, loss in enumerate((2.0, 1.5)):
        values.add(
            step,
            0,
            torch.tensor(loss),
            {"train/loss": torch.tensor(loss), "train/probe_loss": torch.tensor(0.5)},
        )
    assert values.due_for_display()  # nothing read yet
    assert values.read() == [
        {"train/loss": 2.0, "train/probe_loss": 0.5},
        {"train/loss": 1.5, "train/probe_loss": 0.5},
    ]
    values.add(2, 1, torch.tensor(1.0), {"train/loss": torch.tensor(1.0)})
    assert not values.due_for_display()  # read less than STATUS_READ_S ago
    monkeypatch.setattr(speed, "STATUS_READ_S", 0.0)
    assert values.due_for_display()
    values.add(3, 1, torch.tensor(float("inf")), {"train/loss": torch.tensor(float("inf"))})
    values.add(4, 1, torch.tensor(float("nan")), {"train/loss": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match=r"loss is inf at step 3 \(epoch 1\)"):
        values.read()
    assert values.rows == []  # the rows are consumed: nothing is read twice
