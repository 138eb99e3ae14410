"""The pedestrian detector: torchvision Faster R-CNN + FPN, built from scratch, nothing downloaded.

Two layouts share one class, :class:`PedestrianDetector` (a :class:`torchvision.models.detection.FasterRCNN`):

* ``"tiny"`` (default): a small from-scratch backbone (5 conv stages, 16-96 channels, BatchNorm),
  a 3-level FPN of 64 channels (+ max-pool level), pedestrian-shaped anchors and a 256-wide box
  head; about 1 M parameters, trains on 2 CPU cores.
* ``"resnet50_fpn"``: torchvision's ``fasterrcnn_resnet50_fpn`` layout (frozen BatchNorm, as for a
  pretrained backbone), so a torchvision or Tracktor MOT17 Faster R-CNN state dict loads strictly
  (:func:`load_detector_weights`).

The RPN and the RoI heads are replaced by :mod:`trackers.detection.stages`' subclasses, which hold
no parameters of their own: the state dict keys are torchvision's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from deepmot.errors import DataFormatError
from trackers.detection.stages import MatchedRoIHeads, MatchedRPN, StageConfig

__all__ = ["ModelConfig", "PedestrianDetector", "build_detector", "load_detector_weights", "TinyBackbone"]

LAYOUTS = ("tiny", "resnet50_fpn")


@dataclass
class ModelConfig:
    """Detector architecture and the two training stages.

    ``layout``: "tiny" | "resnet50_fpn". ``min_size``/``max_size``: torchvision's resize (pixels of
    the shorter / longer side). ``width``, ``anchor_sizes`` (one per FPN level, pixels) and
    ``aspect_ratios`` (height / width) shape the tiny layout only; ``resnet50_fpn`` keeps
    torchvision's anchors so that its checkpoints fit. Proposal and
    detection limits as in torchvision (``rpn_post_nms_train`` proposals per image reach the box
    head). ``rpn`` / ``roi``: matcher and losses of each stage (:class:`StageConfig`).
    """

    layout: str = "tiny"
    num_classes: int = 2
    min_size: int = 360
    max_size: int = 640
    width: float = 1.0
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    aspect_ratios: list[float] = field(default_factory=lambda: [2.0, 2.5, 3.0])
    rpn_pre_nms_train: int = 1000
    rpn_post_nms_train: int = 500
    rpn_pre_nms_test: int = 500
    rpn_post_nms_test: int = 300
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    rpn: StageConfig = field(default_factory=lambda: StageConfig(
        matcher="iou", cls_loss="bce", box_loss="smooth_l1", pos_iou=0.7, neg_iou=0.3, samples=256,
        pos_fraction=0.5, low_quality=True))
    roi: StageConfig = field(default_factory=StageConfig)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"model.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.num_classes < 2:
            raise ValueError("model.num_classes must be >= 2 (background + pedestrian)")


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Five stride-2 stages (two 3x3 convs each); ``forward(x (B, 3, H, W))`` -> the last stage.

    Channels ``[16, 32, 48, 64, 96] * width``; strides 2, 4, 8, 16, 32 (``layer2..layer4`` feed the FPN).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        ch = [max(8, int(round(c * width))) for c in (16, 32, 48, 64, 96)]
        self.channels = ch
        cin = 3
        for name, c in zip(("stem", "layer1", "layer2", "layer3", "layer4"), ch):
            self.add_module(name, nn.Sequential(_conv(cin, c, 2), _conv(c, c, 1)))
            cin = c

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        for m in self.children():
            x = m(x)
        return x


class _Transform(GeneralizedRCNNTransform):
    """torchvision's resize + normalise, also resizing the targets' ``"ignore"`` boxes."""

    def resize(self, image, target=None):  # noqa: D102
        size = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is not None and "ignore" in target:
            target["ignore"] = resize_boxes(target["ignore"], size, image.shape[-2:])
        return image, target


class PedestrianDetector(FasterRCNN):
    """Faster R-CNN + FPN whose RPN and box head take their assignment and loss from
    :mod:`deepmot.matching` / :mod:`deepmot.losses` (:class:`ModelConfig` ``rpn`` / ``roi``).

    Inputs as torchvision's: a list of (3, H, W) float RGB images in [0, 1]; targets
    ``[{"boxes": (n, 4) xyxy pixels, "labels": (n,) int64, "ignore": (m, 4) xyxy (optional)}]``.
    Training returns the loss dict, evaluation a list of ``{"boxes", "labels", "scores"}``.
    """

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        kw = dict(min_size=cfg.min_size, max_size=cfg.max_size, box_score_thresh=cfg.box_score_thresh,
                  box_nms_thresh=cfg.box_nms_thresh, box_detections_per_img=cfg.detections_per_img,
                  rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
                  rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test)
        if cfg.layout == "resnet50_fpn":
            # torchvision's fasterrcnn_resnet50_fpn, with the frozen BatchNorm of a pretrained backbone
            body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
            super().__init__(_resnet_fpn_extractor(body, 3), num_classes=cfg.num_classes, **kw)
        else:
            body = TinyBackbone(cfg.width)
            out = 64
            backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, body.channels[2:], out,
                                       extra_blocks=LastLevelMaxPool())
            if len(cfg.anchor_sizes) != 4:
                raise ValueError("model.anchor_sizes must list 4 sizes (one per FPN level) for the tiny layout")
            anchors = AnchorGenerator(tuple((int(s),) for s in cfg.anchor_sizes),
                                      (tuple(float(a) for a in cfg.aspect_ratios),) * 4)
            pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
            head = TwoMLPHead(out * 7 * 7, 256)
            super().__init__(backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=pool,
                             box_head=head, box_predictor=FastRCNNPredictor(256, cfg.num_classes), **kw)
        self.transform.__class__ = _Transform
        self.rpn = MatchedRPN.from_rpn(self.rpn, cfg.rpn)
        self.roi_heads = MatchedRoIHeads.from_roi_heads(self.roi_heads, cfg.roi)


def build_detector(cfg: ModelConfig | None = None) -> PedestrianDetector:
    """A randomly initialised :class:`PedestrianDetector` (no weights downloaded)."""
    return PedestrianDetector(cfg or ModelConfig())


def load_detector_weights(model: nn.Module, path, report_limit: int = 8) -> None:
    """Load a Faster R-CNN state dict from ``path`` into ``model``, strictly.

    Accepts a bare state dict (torchvision's ``model.state_dict()``, Tracktor's ``*.model``), a
    ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper (our checkpoints) and ``module.`` prefixes.
    Read with ``torch.load(weights_only=True)``. Raises :class:`DataFormatError` naming the file with
    a readable report (missing / unexpected keys, shape mismatches, the layout the file looks like)
    when the file is corrupt, not a state dict, or does not fit the model.
    """
    from deepmot.runtime.checkpoint import extract_state_dict

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # corrupt file, or one holding arbitrary pickled objects
        raise DataFormatError(f"not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                              path) from None
    state = extract_state_dict(obj, str(path))
    own = model.state_dict()
    # BatchNorm step counters carry no weights: a frozen-BN model has none, a BN checkpoint may.
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(xs):
            more = f" (+{len(xs) - report_limit} more)" if len(xs) > report_limit else ""
            return ", ".join(xs[:report_limit]) + more

        looks = "resnet50_fpn" if any(k.startswith("backbone.body.layer1.0.conv1") for k in state) else \
            "tiny" if any(k.startswith("backbone.body.stem") for k in state) else "not a Faster R-CNN"
        parts = [f"weights do not fit the {getattr(getattr(model, 'cfg', None), 'layout', '?')} detector "
                 f"(the file looks like: {looks})"]
        if missing:
            parts.append(f"{len(missing)} missing: {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {few(shapes)}")
        raise DataFormatError("; ".join(parts), path)
    missing_counters = {k: own[k] for k in own if k not in state}
    model.load_state_dict({**missing_counters, **state}, strict=True)


def model_summary(model: nn.Module) -> str:
    """One line: layout and parameter count."""
    n = sum(p.numel() for p in model.parameters())
    layout = getattr(getattr(model, "cfg", None), "layout", "?")
    return f"{layout} Faster R-CNN + FPN, {n / 1e6:.2f} M parameters"

