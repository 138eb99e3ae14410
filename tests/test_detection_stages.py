"""The detector's stages against torchvision: losses, checkpoints, every matcher trains."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from deepmot.errors import DataFormatError
from trackers.detection.model import ModelConfig, build_detector, load_detector_weights
from trackers.detection.stages import StageConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(h: int = 180, w: int = 320):
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, h, w, generator=g), torch.rand(3, h, w, generator=g)]
    targets = [
        {"boxes": torch.tensor([[50.0, 25, 80, 100], [150, 50, 175, 115], [10, 10, 30, 60]]),
         "labels": torch.ones(3, dtype=torch.int64)},
        {"boxes": torch.tensor([[200.0, 75, 225, 150]]), "labels": torch.ones(1, dtype=torch.int64)},
    ]
    return imgs, targets


def _small(**kw) -> ModelConfig:
    return ModelConfig(min_size=180, max_size=320, **kw)


def test_iou_matcher_with_torchvision_loss_equals_torchvision():
    """matcher iou + ce/bce + smooth-L1 through deepmot.matching / deepmot.losses == torchvision's
    own RPN and RoI losses (same weights, same RNG for the samplers), value and gradient."""
    torch.manual_seed(0)
    ours = build_detector(_small())
    ref = copy.deepcopy(ours)
    ref.rpn.__class__ = RegionProposalNetwork
    ref.roi_heads.__class__ = RoIHeads
    imgs, targets = _batch()
    ours.train()
    ref.train()
    torch.manual_seed(5)
    a = ours(imgs, targets)
    torch.manual_seed(5)
    b = ref(imgs, targets)
    assert set(a) == set(b) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    for k in b:
        assert b[k].item() > 0
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    sum(a.values()).backward()
    sum(b.values()).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_torchvision_resnet50_fpn_state_dict_loads_strictly_and_detects(tmp_path):
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, min_size=160, max_size=160)
    path = tmp_path / "frcnn.pth"
    torch.save(tv.state_dict(), path)
    ours = build_detector(ModelConfig(layout="resnet50_fpn", min_size=160, max_size=160, rpn_pre_nms_test=1000,
                                      rpn_post_nms_test=1000))
    load_detector_weights(ours, path)
    tv.eval()
    ours.eval()
    img = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine, theirs = ours([img])[0], tv([img])[0]
    assert len(theirs["boxes"]) > 0
    torch.testing.assert_close(mine["boxes"], theirs["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(mine["scores"], theirs["scores"], rtol=1e-4, atol=1e-5)


def test_corrupt_or_foreign_checkpoint_gives_one_clear_error(tmp_path):
    model = build_detector(_small())
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(DataFormatError, match="corrupt.pth.*not a readable weights file"):
        load_detector_weights(model, bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(3, 3), "backbone.body.stem.0.0.weight": torch.zeros(1)}, foreign)
    with pytest.raises(DataFormatError) as e:
        load_detector_weights(model, foreign)
    msg = str(e.value)
    assert "foreign.pth" in msg and "missing" in msg and "unexpected: fc.weight" in msg and "shape mismatches" in msg
    assert "\n" not in msg
    r50 = tmp_path / "r50.pth"
    torch.save(build_detector(ModelConfig(layout="resnet50_fpn")).state_dict(), r50)
    with pytest.raises(DataFormatError, match="looks like: resnet50_fpn"):
        load_detector_weights(model, r50)


ROI = {
    "hungarian": dict(matcher="hungarian", cls_loss="focal", box_loss="l1_giou", samples=0),
    "aligned": dict(matcher="aligned", cls_loss="ce"),
    "deta_stage2": dict(matcher="deta_stage2", cls_loss="focal"),
    "ot": dict(matcher="ot", cls_loss="focal", box_loss="l1_giou"),
    "uot": dict(matcher="uot", cls_loss="focal", box_loss="l1_giou"),
    "iou-rs": dict(matcher="iou", cls_loss="rs", samples=0, box_loss="l1_giou", self_balance=True),
    "iou-brs": dict(matcher="iou", cls_loss="brs", samples=0),
    "iou-ap": dict(matcher="iou", cls_loss="ap", samples=0),
    "iou-bap": dict(matcher="iou", cls_loss="bap", samples=0),
}


@pytest.mark.parametrize("name", list(ROI))
def test_every_matcher_and_loss_trains_a_few_steps(name):
    rpn = StageConfig(matcher="iou", cls_loss="brs" if name == "iou-brs" else "bce", pos_iou=0.7, neg_iou=0.3,
                      low_quality=True, samples=0 if name == "iou-brs" else 256, pos_fraction=0.5)
    torch.manual_seed(0)
    model = build_detector(_small(roi=StageConfig(**ROI[name]), rpn=rpn))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    imgs, targets = _batch()
    targets[0]["ignore"] = torch.tensor([[250.0, 20, 300, 150]])
    before = [p.detach().clone() for p in model.roi_heads.parameters()]
    for _ in range(2):
        losses = model(imgs, targets)
        total = sum(losses.values())
        assert torch.isfinite(total), losses
        opt.zero_grad()
        total.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.roi_heads.parameters()))


def test_predictions_in_ignore_regions_are_neither_positive_nor_negative():
    model = build_detector(_small())
    stage = model.roi_heads.stage
    refs = torch.tensor([[[10.0, 10, 30, 50], [100, 100, 120, 140], [0, 0, 200, 180], [50, 25, 80, 100]]])
    gt = [torch.tensor([[50.0, 25, 80, 100]])]
    ignore = [torch.tensor([[95.0, 95, 130, 150], [45, 20, 90, 110]])]
    mask = stage.mask_ignored(refs, torch.ones(1, 4, dtype=torch.bool), gt, ignore)
    # inside an ignore region -> off; partly inside (IoA < 0.5) -> kept; a GT inside an ignore region stays
    assert mask.tolist() == [[True, False, True, True]]


def test_ignore_regions_are_resized_with_the_image():
    model = build_detector(ModelConfig(min_size=90, max_size=160))
    model.train()
    target = {"boxes": torch.tensor([[20.0, 20, 60, 100]]), "labels": torch.ones(1, dtype=torch.int64),
              "ignore": torch.tensor([[100.0, 40, 140, 160]])}
    _, (out,) = model.transform([torch.rand(3, 180, 320)], [target])
    torch.testing.assert_close(out["boxes"], torch.tensor([[10.0, 10, 30, 50]]))
    torch.testing.assert_close(out["ignore"], torch.tensor([[50.0, 20, 70, 80]]))


def test_bad_stage_names_are_refused():
    with pytest.raises(ValueError, match="matcher must be one of"):
        StageConfig(matcher="greedy")
    with pytest.raises(ValueError, match="needs a softmax head"):
        build_detector(_small(rpn=StageConfig(cls_loss="ce")))
