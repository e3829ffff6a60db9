"""End to end: train.py's ``train`` on the built-in digits and on folders, resume, outputs."""

from __future__ import annotations

import copy
import csv
import logging
from pathlib import Path

import pytest
import torch
from conftest import ATTO, write_truncated
from helpers.runs import TREE, scalar_tags

from common.errors import NonFiniteLossError, UserError
from train import train
from trainer.checkpoint import REQUIRED_KEYS
from trainer.run_log import RunLogger


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_default_run_learns_the_digits(cfg_factory, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        summary = train(cfg_factory("trainer.epochs=2", ATTO), run)
    assert "PREDICTIONS COLLAPSED" not in caplog.text  # a healthy run is not warned about
    best = summary.best_metric
    assert summary.final["val"].acc == pytest.approx(
        float(read_csv(run / "metrics.csv")[-1]["val_acc"]), abs=1e-5
    )
    assert best > 0.5  # chance is 0.1; two epochs reach about 0.75
    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("train_loss", "val_loss", "val_acc", "lr", "val_ema_acc", "val_balanced_acc"):
        assert column in rows[0]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert set(REQUIRED_KEYS) <= set(state)
    assert state["epoch"] == 2 and state["class_names"] == [str(d) for d in range(10)]
    assert state["class_counts"][0] > state["class_counts"][-1]
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    assert state["config"]["model"]["name"] == "convnextv2_atto"
    best_state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best_state["best_metric"] == pytest.approx(best)
    tags = scalar_tags(run)
    assert not any(tag.endswith("acc_best") for tag in tags)  # TensorBoard shows a curve's maximum itself
    for tag in ("train/loss", "train/lr", "val/loss", "val/acc", "val/ece"):
        assert tags[tag] == [1, 2], tag
        assert tags[tag.replace("val/", "val_ema/")] == [1, 2] or not tag.startswith("val/")
    assert "val_per_class/9" in tags
    # the long-tail groups of the digits (training counts 124 down to 12): many, medium and few
    for group in ("many", "medium", "few"):
        assert tags[f"val/acc_{group}"] == [1, 2] and rows[-1][f"val_acc_{group}"] != ""
    assert tags["val/balanced_acc_adjusted"] == [1, 2] and rows[-1]["val_ema_balanced_acc_adjusted"] != ""


def test_ldam_with_mixup_on_a_folder_with_odd_last_batch(cfg_factory, image_tree, tmp_path, caplog):
    cfg = cfg_factory(
        *TREE,
        f"dataset.root={image_tree}",
        "loss=ldam",
        "mixup=default",
        "mixup.prob=1.0",
        "trainer.clip_grad=5.0",
        "loss.drw_epoch=2",
        "trainer.epochs=2",
    )
    with caplog.at_level(logging.INFO):
        train(cfg, tmp_path / "run")
    # the start and the events are said: data per split and class, parameters, EMA, DRW
    assert "23 training images (train), 12 validation images (valid)" in caplog.text
    assert "train/valid:\n  cat 12/4\n  dog 7/4\n  fox 4/4" in caplog.text and "M parameters" in caplog.text
    assert "epoch 2: deferred re-weighting (loss.drw_epoch) switches the class weights on" in caplog.text
    assert "epoch 1: deferred" not in caplog.text and "EMA of the weights (val_ema): decay" in caplog.text
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["class_names"] == ["cat", "dog", "fox"] and state["class_counts"] == [12, 7, 4]
    assert state["num_updates"] == 2 * 5  # 23 images, batches of 4: the odd last batch is dropped


def test_focal_with_mixup_and_balanced_sampler(cfg_factory, image_tree, tmp_path):
    cfg = cfg_factory(
        *TREE,
        f"dataset.root={image_tree}",
        "loss=focal",
        "mixup=default",
        "dataset.sampler=balanced",
        "loss.alpha=balanced",
        "trainer.ema.enabled=false",
    )
    assert train(cfg, tmp_path / "run").best_metric is not None
    assert "val_ema_acc" not in read_csv(tmp_path / "run" / "metrics.csv")[0]


class Crash(Exception):
    pass


def crash_after(epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the run die right after ``epoch`` is checkpointed, as a killed process would."""
    epoch_line = RunLogger.epoch_line

    def dying(self, end, *args):
        epoch_line(self, end, *args)
        if end.epoch == epoch:
            raise Crash

    monkeypatch.setattr(RunLogger, "epoch_line", dying)


def test_resume_continues_where_it_stopped(cfg_factory, image_tree, tmp_path, monkeypatch):
    common = [*TREE, f"dataset.root={image_tree}", "mixup=default", "mixup.prob=0.5", "trainer.epochs=3"]
    straight = tmp_path / "straight"
    train(cfg_factory(*common), straight)
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as m:
        crash_after(2, m)
        with pytest.raises(Crash):
            train(cfg_factory(*common), stopped)
    # resume into the checkpoint's own run directory, whatever run_dir Hydra made for this call
    train(cfg_factory(*common, f"resume={stopped}/checkpoints/last.pt"), tmp_path / "ignored")
    assert [r["epoch"] for r in read_csv(stopped / "metrics.csv")] == ["1", "2", "3"]
    assert scalar_tags(stopped)["val/acc"] == [1, 2, 3]
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert b["epoch"] == 3 and b["num_updates"] == a["num_updates"]
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"


def test_resume_refuses_other_classes(cfg_factory, image_tree, tmp_path):
    train(cfg_factory(*TREE, f"dataset.root={image_tree}"), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match="was trained on 3 classes"):
        train(cfg_factory("trainer.epochs=2", f"resume={ckpt}"), tmp_path / "other")
    with pytest.raises(UserError, match="model.name=.convnext_atto."):
        train(
            cfg_factory(
                *TREE,
                f"dataset.root={image_tree}",
                "model=convnext",
                "model.name=convnext_atto",
                f"resume={ckpt}",
            ),
            tmp_path / "o",
        )
    again = [*TREE, f"dataset.root={image_tree}", f"resume={ckpt}"]
    with pytest.raises(UserError, match="model.head='linear', but this run has model.head='cosine'"):
        train(cfg_factory(*again, "model.head=cosine"), tmp_path / "o")


def test_resume_refuses_another_cosine_scale(cfg_factory, image_tree, tmp_path):
    common = [*TREE, f"dataset.root={image_tree}", "loss=ldam", "trainer.ema.enabled=false"]
    train(cfg_factory(*common), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert torch.load(ckpt, weights_only=True)["model"]["head.fc.scale"].item() == 30.0
    with pytest.raises(UserError, match=r"trained with model.cosine_scale=30.0, but this run has 16\."):
        train(
            cfg_factory(*common, "trainer.epochs=2", "model.cosine_scale=16", f"resume={ckpt}"),
            tmp_path / "o",
        )


def test_data_parallel_under_torchrun_is_refused(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="trainer.data_parallel=true under torchrun"):
        train(cfg_factory("trainer.data_parallel=true"), tmp_path / "run")


def test_bad_settings_fail_before_data_is_read(cfg_factory, tmp_path):
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]
    with pytest.raises(UserError, match="optimizer.lr=-1"):
        train(cfg_factory(*nowhere, "optimizer.lr=-1"), tmp_path / "run")
    with pytest.raises(UserError, match="mixup.prob=1.5"):
        train(cfg_factory(*nowhere, "mixup=default", "mixup.prob=1.5"), tmp_path / "run")
    with pytest.raises(UserError, match="trainer.epochs=0"):
        train(cfg_factory(*nowhere, "trainer.epochs=0"), tmp_path / "run")
    with pytest.raises(UserError, match="resume="):
        train(cfg_factory(*nowhere, f"resume={tmp_path / 'none.pt'}"), tmp_path / "run")
    with pytest.raises(UserError, match="dataset.root"):
        train(cfg_factory("dataset=imagefolder"), tmp_path / "run")
    with pytest.raises(UserError, match="model.checkpoint_path="):
        train(cfg_factory(*nowhere, f"model.checkpoint_path={tmp_path / 'w.pth'}"), tmp_path / "run")
    with pytest.raises(UserError, match="dataset.batch_size must be even"):
        train(cfg_factory("mixup=default", "dataset.batch_size=1"), tmp_path / "run")
    with pytest.raises(UserError, match="trainer.checkpoint_every_steps=0"):
        train(cfg_factory(*nowhere, "trainer.checkpoint_every_steps=0"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_training_skips_an_unreadable_image_even_with_mixup(cfg_factory, image_tree, tmp_path, caplog):
    write_truncated(image_tree / "train" / "dog" / "broken.png")  # its header opens: skipped when decoded
    cfg = cfg_factory(*TREE, f"dataset.root={image_tree}", "mixup=default", "mixup.prob=1.0")
    with caplog.at_level(logging.INFO):
        train(cfg, tmp_path / "run")
    assert "broken.png" in caplog.text and "skipped 1 unreadable image(s)" in caplog.text


def test_nonfinite_loss_stops_naming_epoch_and_step(cfg_factory, image_tree, tmp_path):
    common = [*TREE, f"dataset.root={image_tree}", "loss=ldam"]
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1 .*no checkpoint was written"):
        train(
            cfg_factory(*common, "model.cosine_scale=1e39"), tmp_path / "fresh"
        )  # the scale overflows float32
    with pytest.raises(NonFiniteLossError, match=r"optimizer.sam.rho=1e\+30 moves the weights far") as err:
        train(cfg_factory(*common, "optimizer.sam.rho=1e30"), tmp_path / "sam")  # SAM's ascent, not the lr
    assert "Lower optimizer.lr" not in str(err.value)
    run = tmp_path / "run"
    train(cfg_factory(*common), run)
    resume = f"resume={run}/checkpoints/last.pt"
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1 .*last.pt still holds epoch 1"):
        changed = ["loss.max_m=1e39", "resume_accept_changes=true"]  # a resume may change the loss only so
        train(cfg_factory(*common, "trainer.epochs=2", *changed, resume), tmp_path / "ignored")
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_the_lr_column_is_the_mean_lr_the_epoch_trained_with(cfg_factory, image_tree, tmp_path):
    from timm.scheduler import create_scheduler_v2

    run = tmp_path / "run"
    train(cfg_factory(*TREE, f"dataset.root={image_tree}", "trainer.epochs=2", "optimizer.lr=1e-3"), run)
    steps = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["num_updates"] // 2
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule, _ = create_scheduler_v2(
        optimizer,
        "cosine",
        num_epochs=2,
        updates_per_epoch=steps,
        min_lr=1e-6,
        warmup_epochs=1,
        warmup_lr=1e-6,
        step_on_epochs=False,
    )
    lrs = []
    for update in range(2 * steps):  # the lr each optimizer update used
        if update % steps == 0:
            schedule.step(update // steps)
        schedule.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    logged = [float(r["lr"]) for r in read_csv(run / "metrics.csv")]
    expected = [sum(lrs[:steps]) / steps, sum(lrs[steps:]) / steps]
    assert logged == pytest.approx(expected, rel=1e-4)
    assert logged[0] > 100 * 1e-6  # warm-up: not its first step's 1e-6


def test_resume_with_more_epochs_follows_the_longer_runs_schedule(cfg_factory, image_tree, tmp_path, caplog):
    common = [*TREE, f"dataset.root={image_tree}", "trainer.ema.enabled=false"]
    planned = tmp_path / "planned"
    train(cfg_factory(*common, "trainer.epochs=4"), planned)
    extended = tmp_path / "extended"
    train(cfg_factory(*common, "trainer.epochs=2"), extended)
    with caplog.at_level(logging.WARNING):
        train(
            cfg_factory(*common, "trainer.epochs=4", f"resume={extended}/checkpoints/last.pt"), tmp_path / "x"
        )
    assert "schedule differs from the checkpoint's (t_initial 12 -> 24" in caplog.text
    lrs = [[float(r["lr"]) for r in read_csv(run / "metrics.csv")] for run in (planned, extended)]
    assert len(lrs[1]) == 4 and lrs[1][2:] == pytest.approx(lrs[0][2:])  # the 4-epoch run's rates
    assert lrs[1][2] > 10 * 1e-6  # not the 2-epoch plan's minimum
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # same settings: the saved schedule is restored without a word
        train(
            cfg_factory(*common, "trainer.epochs=4", f"resume={extended}/checkpoints/last.pt"), tmp_path / "y"
        )
    assert "schedule differs" not in caplog.text


def test_a_file_that_is_no_checkpoint_is_named_without_torchs_advice(cfg_factory, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match="is not a readable checkpoint") as err:
        train(cfg_factory(f"resume={junk}"), tmp_path / "run")
    assert "weights_only" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_data_is_read(cfg_factory, tmp_path):
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]
    with pytest.raises(UserError, match="trainer.device=cuda, but no CUDA device is visible"):
        train(cfg_factory(*nowhere, "trainer.device=cuda"), tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("optimizer.opt=adamx", "optimizer.opt='adamx'"),
        ("scheduler.sched=cosin", "scheduler.sched='cosin'"),
        ("dataset.interpolation=bilinearr", "dataset.interpolation='bilinearr' is not one of"),
        ("dataset.auto_augment=randaugment", "dataset.auto_augment='randaugment' is not a policy timm knows"),
        ("dataset.auto_augment=rand-q9", "Unknown RandAugment config section"),
        ("mixup=default mixup.mode=foo", "mixup.mode='foo' is not one of: batch, pair, elem"),
        ("mixup=default mixup.mixup_alpha=-1", "mixup.mixup_alpha=-1 must be >= 0"),
        ("mixup=default mixup.mixup_alpha=0 mixup.cutmix_alpha=0", "nothing would be mixed"),
        ("mixup=default mixup.cutmix_minmax=[0.5,0.2]", r"mixup.cutmix_minmax=\[0.5, 0.2\] must be"),
        ("model.drop_path_rate=2", "model.drop_path_rate=2 is a probability"),
        ("model.name=convnextv2_attoo", "model.name='convnextv2_attoo' is not a timm model"),
        ("model.head=foo", "model.head='foo' is not one of"),
    ],
)
def test_library_names_and_values_are_checked_before_data_is_read(cfg_factory, tmp_path, override, words):
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]  # a scan would fail first
    with pytest.raises(UserError, match=words):
        train(cfg_factory(*nowhere, *override.split()), tmp_path / "run")


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_layer_wise_lr_decay_uses_timms_groups(cfg_factory, image_tree, tmp_path, caplog, scheduler):
    from timm.optim._param_groups import param_groups_layer_decay

    from models.factory import create_model

    common = [
        *TREE,
        f"dataset.root={image_tree}",
        "trainer.ema.enabled=false",
        f"scheduler={scheduler}",
        ATTO,
    ]
    with caplog.at_level(logging.INFO):
        train(cfg_factory(*common, "optimizer.layer_decay=0.9", "optimizer.lr=1e-3"), tmp_path / "run")
    assert "Layer-wise lr decay: " in caplog.text
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["optimizer"][
        "param_groups"
    ]
    model = create_model("convnextv2_atto", num_classes=3)
    timms = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.9)
    assert sorted((round(g["lr_scale"], 6), len(g["params"]), g["weight_decay"]) for g in saved) == sorted(
        (round(g["lr_scale"], 6), len(g["params"]), g["weight_decay"]) for g in timms
    )
    assert all(g["fused"] for g in saved)  # timm's groups, updated by torch's fused kernel
    head = max(g["lr"] for g in saved)
    for group in saved:  # every group at its scale of the same base lr, with or without a schedule
        assert group["lr"] == pytest.approx(head * group["lr_scale"], rel=1e-6)
    logged = float(read_csv(tmp_path / "run" / "metrics.csv")[0]["lr"])
    assert logged == pytest.approx(1e-3) if scheduler == "none" else logged > 1e-4  # the head's lr


def test_optimizers_with_fused_kernels_use_them_with_timms_groups_and_the_same_update():
    from timm.optim import create_optimizer_v2

    from models.factory import create_model
    from trainer.optimization import fused

    torch.manual_seed(0)
    model = create_model("convnextv2_atto", num_classes=3)
    twin = copy.deepcopy(model)
    for settings in ({"opt": "adamw"}, {"opt": "sgd", "momentum": 0.9}, {"opt": "adamw", "layer_decay": 0.8}):
        timms = create_optimizer_v2(model, lr=1e-3, weight_decay=0.05, **settings)
        made = fused(timms)
        assert made.defaults["fused"] and type(made) is type(timms), settings
        assert [{k: v for k, v in g.items() if k not in ("fused", "params")} for g in made.param_groups] == [
            {k: v for k, v in g.items() if k not in ("fused", "params")} for g in timms.param_groups
        ]
    lamb = create_optimizer_v2(model, opt="lamb", lr=1e-3)
    assert fused(lamb) is lamb  # no fused kernel: timm's own, untouched
    asked = create_optimizer_v2(model, opt="adamw", lr=1e-3, foreach=True)
    assert fused(asked) is asked  # a chosen implementation is kept
    plain = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    quick = fused(create_optimizer_v2(twin, opt="adamw", lr=1e-3, weight_decay=0.05))
    images = torch.randn(4, 3, 32, 32)
    for net, optimizer in ((model, plain), (twin, quick)):
        for _ in range(3):
            optimizer.zero_grad()
            net(images).square().mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    quick.load_state_dict(plain.state_dict())  # a checkpoint of the loop-over-parameters optimizer resumes


def test_early_stopping_stops_says_why_and_a_resume_does_not_train_on(
    cfg_factory, image_tree, tmp_path, caplog
):
    common = [*TREE, f"dataset.root={image_tree}", "trainer.ema.enabled=false", "trainer.epochs=4"]
    stop = ["trainer.early_stopping.patience=1", "trainer.early_stopping.min_delta=1.0"]  # no gain is enough
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        summary = train(cfg_factory(*common, *stop), run)
    assert (
        summary.epoch == 2
        and "after epoch 2, val/balanced_acc has not improved by more than 1" in summary.stopped_early
    )
    assert "Early stopping: after epoch 2" in caplog.text
    assert [r["epoch"] for r in read_csv(run / "metrics.csv")] == ["1", "2"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["stale_epochs"] == 1 and (run / "checkpoints" / "best.pt").is_file()
    assert state["stopped_early"] == summary.stopped_early  # the checkpoint says why, too
    again = train(cfg_factory(*common, *stop, "resume=auto"), run)
    assert again.epoch == 2 and again.stopped_early  # the checkpoint remembers: nothing more trained
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    on = train(cfg_factory(*common, "resume=auto"), run)  # without the rule, the run goes on
    assert on.epoch == 4 and on.stopped_early is None
    # a run that cannot improve (a vanishing lr): stops after patience + 1 epochs, best.pt the first
    still = train(cfg_factory(*common, "optimizer.lr=1e-12", "scheduler=none", stop[0]), tmp_path / "still")
    assert still.epoch == 2 and still.best_epoch == 1 and still.stopped_early
    assert torch.load(tmp_path / "still" / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(UserError, match="trainer.early_stopping.patience=0 must be a positive"):
        train(cfg_factory(*common, "trainer.early_stopping.patience=0"), tmp_path / "x")


@pytest.mark.parametrize("loss", ["ce", "ldam"])
def test_accumulating_two_batches_of_16_trains_like_one_of_32(cfg_factory, tmp_path, loss):
    from conftest import make_tree

    tree = make_tree(tmp_path / "tree", {"a": (32, 2), "b": (16, 2), "c": (16, 2)})  # 64: two batches of 32
    common = [
        "dataset=imagefolder",
        f"dataset.root={tree}",
        f"loss={loss}",
        "model.drop_path_rate=0",
        "trainer.ema.enabled=false",
        "optimizer=sgd",  # not invariant to the gradient's scale, as Adam nearly is: a wrong 1/K would show
        "trainer.clip_grad=100.0",  # the clipping path runs, on the whole group's gradient
    ]
    train(cfg_factory(*common, "dataset.batch_size=32"), tmp_path / "big")
    train(cfg_factory(*common, "dataset.batch_size=16", "trainer.accumulate_steps=2"), tmp_path / "acc")
    big, acc = (
        torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True) for r in ("big", "acc")
    )
    assert big["num_updates"] == acc["num_updates"] == 2
    for name, tensor in big["model"].items():
        assert torch.allclose(tensor, acc["model"][name], atol=1e-6, rtol=1e-5), name
    assert (
        big["model"]["stem.0.weight"].ne(acc["model"]["stem.0.weight"]).any() or True
    )  # rounding may differ
    rows = [read_csv(tmp_path / r / "metrics.csv")[0] for r in ("big", "acc")]
    assert float(rows[0]["train_loss"]) == pytest.approx(float(rows[1]["train_loss"]), rel=1e-5)


def test_a_short_last_group_updates_with_the_mean_of_its_batches(cfg_factory, tmp_path):
    from conftest import make_tree

    tree = make_tree(tmp_path / "tree", {"a": (24, 2), "b": (12, 2), "c": (12, 2)})  # 48: 3 batches of 16
    common = [
        "dataset=imagefolder",
        f"dataset.root={tree}",
        "dataset.batch_size=16",
        "trainer.ema.enabled=false",
    ]
    train(cfg_factory(*common, "trainer.accumulate_steps=2", "trainer.epochs=2"), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["num_updates"] == 2 * 2  # groups (1, 2) and (3) each epoch
    assert state["scheduler"]["t_initial"] == 2 * 2  # the schedule counts optimizer updates
    with pytest.raises(
        UserError, match="checkpoint_every_steps=3 must be a multiple of trainer.accumulate_steps=2"
    ):
        train(
            cfg_factory(*common, "trainer.accumulate_steps=2", "trainer.checkpoint_every_steps=3"),
            tmp_path / "x",
        )


def test_freeze_backbone_epochs_trains_the_head_first_then_all(cfg_factory, image_tree, tmp_path, caplog):
    import timm

    source = timm.create_model("convnextv2_atto", num_classes=1000)  # "pretrained" weights, another head
    weights = tmp_path / "pretrained.pth"
    torch.save(source.state_dict(), weights)
    common = [*TREE, f"dataset.root={image_tree}", f"model.checkpoint_path={weights}", ATTO]
    common += ["model.freeze_backbone_epochs=1", "optimizer.weight_decay=0.5"]  # decay would show
    first = tmp_path / "first"
    with caplog.at_level(logging.INFO):
        train(cfg_factory(*common, "trainer.epochs=1"), first)
    assert "Epochs 1-1 train the classifier only" in caplog.text
    state = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in source.state_dict().items():
        if not name.startswith("head.fc."):  # the backbone: untouched, in the model and its EMA
            assert torch.equal(state["model"][name], tensor) and torch.equal(state["ema"][name], tensor), name
    assert len(state["optimizer"]["state"]) == 2  # optimizer state for the classifier's weight and bias only
    assert not torch.equal(state["model"]["head.fc.weight"][:3], source.state_dict()["head.fc.weight"][:3])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(
            cfg_factory(*common, "trainer.epochs=2", "resume=auto"), first
        )  # resumed into the unfrozen epoch
    assert "epoch 2: the backbone unfreezes" in caplog.text
    straight = tmp_path / "straight"
    train(cfg_factory(*common, "trainer.epochs=2"), straight)
    resumed, whole = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in (first, straight))
    assert not torch.equal(whole["model"]["stem.0.weight"], source.state_dict()["stem.0.weight"])
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    with pytest.raises(UserError, match="model.freeze_backbone_epochs=1 protects pretrained features"):
        train(
            cfg_factory(*TREE, f"dataset.root={image_tree}", "model.freeze_backbone_epochs=1"), tmp_path / "x"
        )


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_every_n_steps_equals_n_single_updates_of_weights_that_stay_put(warmup):
    from timm.utils import ModelEmaV3

    from trainer.ema import update_ema

    model = torch.nn.Linear(3, 2)
    # update_after_step=-1: no first update that copies the model, so that the average shows
    single, every = (ModelEmaV3(model, decay=0.9, use_warmup=warmup, update_after_step=-1) for _ in range(2))
    with torch.no_grad():
        model.weight.add_(1.0)  # the model moved away from the averages' start
    for step in range(1, 9):
        update_ema(single, model, step, every=1)
        update_ema(every, model, step, every=4)  # at steps 4 and 8 only, with decay ** 4
    assert torch.allclose(single.module.weight, every.module.weight, atol=1e-6)
    assert not torch.allclose(single.module.weight, model.weight)  # still an average, not a copy


def test_compile_is_auto_on_cuda_only_and_a_failed_compile_trains_on_uncompiled(monkeypatch, caplog):
    import torch._inductor.config as inductor
    from torch import nn

    from common.dist import SINGLE
    from trainer.config import TrainerConfig
    from trainer.device import CompiledOrEager, wrap_model

    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    cpu = torch.device("cpu")
    assert TrainerConfig().compile == "auto" and wrap_model(model, TrainerConfig(), cpu, SINGLE) is model
    assert TrainerConfig(compile=False).compile == "false"  # a YAML or command-line boolean
    with pytest.raises(UserError, match=r"trainer.compile='yes' is not one of: auto, true, false"):
        TrainerConfig(compile="yes")
    # a compiler that cannot run: torch.compile fails at the first call, the run does not
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    wrapped = wrap_model(model, TrainerConfig(compile="true"), cpu, SINGLE)
    assert isinstance(wrapped, CompiledOrEager)
    x = torch.randn(5, 4)
    try:
        with caplog.at_level(logging.WARNING):
            out = wrapped(x)
            out.sum().backward()
            again = wrapped(x)
    finally:
        torch._dynamo.reset()
    assert wrapped.failed and torch.equal(out, model(x)) and torch.equal(again, out)
    assert all(p.grad is not None for p in model.parameters())
    assert caplog.text.count("torch.compile failed, so training goes on uncompiled") == 1
    assert "/nonexistent/c++" in caplog.text
    assert [name for name, _ in wrapped.named_parameters()] == [
        f"_orig_mod.{n}" for n, _ in model.named_parameters()
    ]


def test_a_batch_of_one_readable_image_trains_unmixed_under_mixup(tmp_path, caplog):
    import math

    from conftest import compose_config, make_tree

    tree = make_tree(tmp_path / "tree", {"a": (3, 2), "b": (3, 2)})
    for name in ("a", "b"):
        for i in range(3):  # listed, but unreadable: skipped when loaded, leaving batches of one image
            write_truncated(tree / "train" / name / f"bad{i}.png")
    settings = ["dataset=imagefolder", f"dataset.root={tree}", "dataset.batch_size=2", "mixup=default"]
    caplog.set_level("WARNING")
    summary = train(compose_config([*settings, "mixup.prob=1.0", "trainer.epochs=2"]), tmp_path / "run")
    assert summary.epoch == 2 and math.isfinite(summary.final["val"].loss)
    assert caplog.text.count("Mixup pairs images, so such a batch trains unmixed") == 1
