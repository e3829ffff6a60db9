"""timm models through our factory: class count, cosine head, local weights, offline pretrained."""

from __future__ import annotations

import time

import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from common.errors import UserError
from models.factory import create_model
from models.heads import CosineClassifier
from models.settings import check_model_group
from train import train


def test_model_has_our_class_count_and_drop_path():
    model = create_model("convnextv2_atto", num_classes=7, drop_path_rate=0.2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.2)


def test_cosine_head_outputs_scaled_cosines():
    model = create_model("convnext_atto", num_classes=5, head="cosine", cosine_scale=16.0)
    assert isinstance(model.head.fc, CosineClassifier)
    assert model.state_dict()["head.fc.scale"].item() == 16.0  # saved with the weights
    out = model(torch.randn(4, 3, 32, 32))
    features = model.forward_head(model.forward_features(torch.randn(4, 3, 32, 32)), pre_logits=True)
    cosines = F.normalize(features, dim=-1) @ F.normalize(model.head.fc.weight, dim=-1).t()
    assert out.shape == (4, 5) and out.abs().max() <= 16.0 + 1e-4
    assert torch.allclose(model.head.fc(features), 16.0 * cosines, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(2, 3, 32, 32)).dtype == torch.float32


def test_local_weights_file_loads_all_but_the_classifier(tmp_path):
    source = timm.create_model("convnextv2_atto", num_classes=1000)  # an "ImageNet" model, random weights
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_model("convnextv2_atto", num_classes=7, checkpoint_path=str(path))
    own, theirs = model.state_dict(), source.state_dict()
    assert torch.equal(own["stem.0.weight"], theirs["stem.0.weight"])
    assert torch.equal(own["stages.3.blocks.1.mlp.fc2.weight"], theirs["stages.3.blocks.1.mlp.fc2.weight"])
    assert own["head.fc.weight"].shape == (7, 320)
    # pretrained=true with a local file takes the file, never the hub
    model = create_model("convnextv2_atto", num_classes=7, pretrained=True, checkpoint_path=str(path))
    assert torch.equal(model.state_dict()["stem.0.weight"], theirs["stem.0.weight"])


def test_frozen_backbone_with_batchnorm_trains_only_a_fresh_classifier(tmp_path):
    source = timm.create_model("resnet10t", num_classes=4)
    path = tmp_path / "stage1.pth"
    torch.save(source.state_dict(), path)
    model = create_model(
        "resnet10t", num_classes=4, checkpoint_path=str(path), reinit_head=True, freeze_backbone=True
    )
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert not torch.equal(model.fc.weight, source.fc.weight)  # re-initialised, not the file's
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    before = model.bn1.running_mean.clone()
    model.train()(torch.randn(4, 3, 32, 32) * 5 + 3)  # a training-mode forward on shifted data
    assert torch.equal(model.bn1.running_mean, before)  # BatchNorm statistics stay frozen


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("convnext_atto").state_dict(), path)
    with pytest.raises(UserError, match="does not hold weights for model.name='convnextv2_atto'"):
        create_model("convnextv2_atto", num_classes=3, checkpoint_path=str(path))


def test_missing_weights_file_and_unknown_model():
    with pytest.raises(UserError, match="model.checkpoint_path='/no/such.pth' is not a file"):
        create_model("convnextv2_atto", num_classes=3, checkpoint_path="/no/such.pth")
    with pytest.raises(UserError, match="is not a timm model"):
        create_model("convnextv9_atto", num_classes=3)
    with pytest.raises(UserError, match="model.head='arc'"):
        create_model("convnextv2_atto", num_classes=3, head="arc")


def test_pretrained_without_hub_fails_fast_naming_checkpoint_path():
    start = time.perf_counter()
    with pytest.raises(UserError, match="model.checkpoint_path"):
        create_model("convnextv2_atto", num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 20  # no minute of network retries


def test_unreachable_hub_fails_fast_without_offline_mode(monkeypatch):
    import huggingface_hub.constants

    from models.factory import hub_reachable

    if hub_reachable():
        pytest.skip("the model hub is reachable from here")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(UserError, match="model.checkpoint_path=FILE"):
        create_model("convnextv2_atto", num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 20  # about a minute of retries without the probe


def test_checkpoints_from_before_the_head_scale_load_with_the_scale_their_loss_used():
    from models.factory import model_from_checkpoint

    model = create_model("convnext_atto", num_classes=3, head="cosine", cosine_scale=1.0)
    weights = {k: v for k, v in model.state_dict().items() if k != "head.fc.scale"}  # the old layout
    images = torch.randn(2, 3, 32, 32)
    cosines = model.eval()(images)
    config = {
        "model": {"name": "convnext_atto", "head": "cosine"},
        "loss": {"_target_": "losses.LDAMLoss", "s": 30.0},
    }
    old = model_from_checkpoint({"config": config, "class_names": ["a", "b", "c"], "model": weights})
    assert old.head.fc.scale.item() == 30.0
    assert torch.allclose(old(images), 30.0 * cosines, atol=1e-4)
    config["loss"] = {"_target_": "losses.CrossEntropyLoss"}  # trained on the cosines themselves
    plain = model_from_checkpoint({"config": config, "class_names": ["a", "b", "c"], "model": weights})
    assert torch.allclose(plain(images), cosines, atol=1e-5)


def test_head_init_scale_shrinks_a_fresh_classifier_only(tmp_path):
    torch.manual_seed(0)
    plain = create_model("convnextv2_atto", num_classes=7)
    torch.manual_seed(0)
    small = create_model("convnextv2_atto", num_classes=7, head_init_scale=0.001)
    assert torch.allclose(small.head.fc.weight, 0.001 * plain.head.fc.weight)
    assert torch.equal(small.stem[0].weight, plain.stem[0].weight)  # the backbone as timm makes it
    source = timm.create_model("convnextv2_atto", num_classes=1000)  # "ImageNet" weights: another head
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    tuned = create_model("convnextv2_atto", num_classes=7, checkpoint_path=str(path), head_init_scale=0.001)
    assert tuned.head.fc.weight.abs().max() < 1e-3 and torch.equal(
        tuned.stem[0].weight, source.stem[0].weight
    )
    cosine = create_model("convnextv2_atto", num_classes=7, head="cosine", head_init_scale=0.001)
    assert cosine.head.fc.weight.abs().max() < 1e-3  # its weights alike; its outputs stay s * cosine
    with pytest.raises(UserError, match="model.head_init_scale=0.001: resnet10t does not take it"):
        create_model("resnet10t", num_classes=7, head_init_scale=0.001)


def test_a_frozen_backbone_keeps_its_batchnorm_statistics_until_it_unfreezes():
    from trainer.hooks.freeze import BackboneFreeze

    model = timm.create_model("resnet10t", num_classes=3)  # BatchNorm throughout
    freeze = BackboneFreeze(model, ("fc",), epochs=1)
    before = model.bn1.running_mean.clone()
    model.train()
    freeze.on_epoch_start(1, say=False)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    freeze.on_gradients()
    assert torch.equal(model.bn1.running_mean, before) and model.conv1[0].weight.grad is None
    assert model.fc.weight.grad is not None  # the classifier trains
    model.train()
    freeze.on_epoch_start(2, say=False)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    freeze.on_gradients()
    assert not torch.equal(model.bn1.running_mean, before) and model.conv1[0].weight.grad is not None


def test_max_norm_caps_every_class_row_after_each_update(cfg_factory, image_tree, tmp_path):
    from models.heads import cap_row_norms

    head = torch.nn.Linear(4, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4, 0, 0], [0.1, 0, 0, 0], [0, 0, 1, 0]]))  # norms 5, 0.1, 1
    holder = torch.nn.Module()
    holder.fc = head
    cap_row_norms(holder, ("fc",), 1.0)
    assert head.weight.norm(dim=1).tolist() == pytest.approx([1.0, 0.1, 1.0])  # only the long row shrank
    assert head.weight[0].tolist() == pytest.approx([0.6, 0.8, 0, 0])  # same direction
    run = tmp_path / "run"
    tree = ["dataset=imagefolder", f"dataset.root={image_tree}", "dataset.batch_size=4"]
    train(cfg_factory(*tree, "model.max_norm=0.05", "trainer.ema.enabled=false", "model.head=linear"), run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    rows = state["model"]["head.fc.weight"].norm(dim=1)
    assert rows.max().item() <= 0.05 + 1e-6 and rows.min().item() > 0.04  # capped, and the cap binds
    with pytest.raises(UserError, match="model.max_norm=-1 must be a positive number"):
        train(cfg_factory("model.max_norm=-1"), tmp_path / "bad")


def test_shifted_batchnorm_follows_the_data_on_a_frozen_backbone(tmp_path):
    path = tmp_path / "stage1.pth"
    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), path)
    kept = create_model("resnet10t", num_classes=3, checkpoint_path=str(path), freeze_backbone=True)
    assert isinstance(kept.bn1, FrozenBatchNorm2d)  # cRT: statistics frozen
    shifted = create_model(
        "resnet10t", num_classes=3, checkpoint_path=str(path), freeze_backbone=True, shift_bn=True
    )
    assert isinstance(shifted.bn1, torch.nn.BatchNorm2d) and not shifted.bn1.weight.requires_grad
    before = shifted.bn1.running_mean.clone()
    shifted.train()(torch.randn(4, 3, 32, 32) + 3)
    assert not torch.equal(shifted.bn1.running_mean, before)  # re-estimated on the new data
    assert [n for n, p in shifted.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_lws_learns_one_scale_per_class_on_a_frozen_classifier(tmp_path):
    from models.factory import model_from_checkpoint

    path = tmp_path / "stage1.pth"
    stage1 = timm.create_model("convnextv2_atto", num_classes=3)
    torch.save(stage1.state_dict(), path)
    model = create_model(
        "convnextv2_atto", num_classes=3, checkpoint_path=str(path), freeze_backbone=True, lws=True
    )
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.fc.class_scale"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.head.fc.class_scale.copy_(torch.tensor([1.0, 2.0, 0.5]))
        assert torch.allclose(model.eval()(x), stage1.eval()(x) * torch.tensor([1.0, 2.0, 0.5]), atol=1e-5)
    state = {
        "config": {
            "model": {"name": "convnextv2_atto", "freeze_backbone": True, "lws": True},
            "loss": {"_target_": "x"},
        },
        "class_names": ["a", "b", "c"],
        "model": model.state_dict(),
    }
    again = model_from_checkpoint(state)  # evaluate.py, predict.py and export.py build it so
    with torch.no_grad():
        assert torch.allclose(again(x), model(x))
    torch.save(model.state_dict(), tmp_path / "scaled.pth")  # as another run's starting weights
    with pytest.raises(UserError, match="learned class scales .* model.lws=true"):
        create_model("convnextv2_atto", num_classes=3, checkpoint_path=str(tmp_path / "scaled.pth"))
    create_model("convnextv2_atto", num_classes=3, checkpoint_path=str(tmp_path / "scaled.pth"), lws=True)


def test_a_relative_max_norm_caps_from_the_starting_rows():
    from models.heads import relative_cap

    holder = torch.nn.Module()
    holder.fc = torch.nn.Linear(4, 3)
    with torch.no_grad():
        holder.fc.weight.copy_(torch.tensor([[3.0, 4, 0, 0], [1.0, 0, 0, 0], [0, 0, 2, 0]]))  # norms 5, 1, 2
    assert relative_cap(holder, ("fc",), 0.1) == pytest.approx(1.4)  # 1 + 0.1 * (5 - 1)
    with pytest.raises(UserError, match="model.max_norm=2 with model.max_norm_relative=true is a fraction"):
        check_model_group({"max_norm": 2, "max_norm_relative": True})
    with pytest.raises(UserError, match="model.shift_bn=true .* needs model.freeze_backbone=true"):
        check_model_group({"shift_bn": True})
    with pytest.raises(UserError, match="model.lws=true learns one scale per class on a trained"):
        check_model_group({"lws": True})


def test_a_cap_on_a_cosine_heads_rows_is_refused_as_doing_nothing(cfg_factory, tmp_path):
    ldam = "losses.LDAMLoss"
    with pytest.raises(UserError, match="model.head=auto, chosen for LDAM.*the cap would do nothing"):
        check_model_group({"max_norm": 0.1, "head": "auto"}, ldam)
    with pytest.raises(UserError, match="model.head=cosine\\) normalises its rows"):
        check_model_group({"max_norm": 0.1, "head": "cosine"})
    check_model_group({"max_norm": 0.1, "head": "auto"}, "losses.CrossEntropyLoss")  # linear: the cap acts
    check_model_group({"max_norm": 0.1, "head": "linear"}, ldam)
    with pytest.raises(UserError, match="the cap would do nothing"):  # from the command line, before data
        train(cfg_factory("loss=ldam", "model.max_norm=0.1"), tmp_path / "run")
