"""The detector's second stage as a box regressor of given boxes, plus an appearance head.

:class:`TracktorNet` wraps a torchvision Faster R-CNN (our :class:`~trackers.detection.model.PedestrianDetector`,
either layout): :meth:`TracktorNet.frame` computes a frame's FPN features once; :meth:`TracktorNet.regress`
pools any boxes from them (RoIAlign), runs the box head and the box predictor, and decodes the
person class's deltas (Tracktor's "regression" of last frame's boxes, and its refinement of
public detections); :meth:`TracktorNet.detect` is the full detector (RPN + box head) on the same
features (private detections). :meth:`TracktorNet.embed` gives L2-normalised appearance vectors of
the regressed boxes: the trained ``reid_head`` (Linear on the box head's representation, as
DeepMOT-Tracktor's ``reid_branch``) when present, else the box head's representation itself.

Boxes are pixel ``x1, y1, x2, y2`` in the coordinates the detector was trained in (for our
detector: MOTChallenge coordinates used as array coordinates, as :mod:`trackers.detection.data`
does); images BGR uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import clip_boxes_to_image

__all__ = ["FrameFeatures", "RoIOutput", "TracktorNet", "load_tracktor_net"]


@dataclass
class FrameFeatures:
    """One frame through the backbone: ``features`` (FPN maps of the resized image), ``images``
    (torchvision's ``ImageList``), ``size`` the original ``(H, W)``, ``gray`` the grayscale frame
    (uint8 ``(H, W)``, for camera-motion compensation)."""

    features: dict
    images: object
    size: tuple[int, int]
    gray: np.ndarray


@dataclass
class RoIOutput:
    """The RoI head on N boxes: ``boxes (N, 4)`` the person-class regression, clipped to the
    image; ``scores (N,)`` person probability; ``rep (N, R)`` the box head's representation;
    ``pooled (N, C)`` the RoI-pooled FPN features averaged over space."""

    boxes: Tensor
    scores: Tensor
    rep: Tensor
    pooled: Tensor


def _to_tensor(image_bgr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)


class TracktorNet(nn.Module):
    """A Faster R-CNN ``detector`` used box by box, with an optional appearance head.

    ``reid_dim``: output size of ``reid_head`` (a Linear on the box head's representation); None:
    no head, :meth:`embed` uses the representation (or the pooled features) directly.
    """

    def __init__(self, detector: nn.Module, reid_dim: int | None = None):
        super().__init__()
        self.detector = detector
        rep = self.rep_dim()
        self.reid_head = nn.Linear(rep, reid_dim) if reid_dim else None

    def get_extra_state(self) -> dict:
        """What rebuilds this net from its state dict alone (plain types, under ``_extra_state``):
        the detector's ``model_config`` and ``reid_dim``."""
        from deepmot.config import config_to_dict

        cfg = getattr(self.detector, "cfg", None)
        return {"model_config": config_to_dict(cfg) if cfg is not None else None,
                "reid_dim": self.reid_head.out_features if self.reid_head is not None else None}

    def set_extra_state(self, state: dict) -> None:  # noqa: D102 (the architecture is fixed at build time)
        pass

    def train(self, mode: bool = True) -> "TracktorNet":
        """Train mode for the appearance head only: the detector (BatchNorm, its RoI heads' training
        path, the transform) always runs as at inference."""
        super().train(mode)
        self.detector.eval()
        return self

    def rep_dim(self) -> int:
        """Width of the box head's representation (1024 for torchvision's R50-FPN)."""
        return int(self.detector.roi_heads.box_predictor.cls_score.in_features)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.parameters()).device

    def frame(self, image_bgr: np.ndarray) -> FrameFeatures:
        """Backbone + FPN features of a BGR uint8 ``(H, W, 3)`` frame."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image (H, W, 3), got shape {tuple(image_bgr.shape)}")
        img = _to_tensor(image_bgr).to(self.device)
        images, _ = self.detector.transform([img])
        feats = self.detector.backbone(images.tensors)
        import cv2

        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        return FrameFeatures(feats, images, (int(image_bgr.shape[0]), int(image_bgr.shape[1])), gray)

    def regress(self, ff: FrameFeatures, boxes: Tensor) -> RoIOutput:
        """Regress ``boxes (N, 4)`` (pixels of the original frame) on frame ``ff``: the box head and
        predictor's person-class decoding, clipped to the image, with scores and features."""
        heads = self.detector.roi_heads
        boxes = boxes.to(self.device, torch.float32).reshape(-1, 4)
        if len(boxes) == 0:
            z = boxes.new_zeros
            return RoIOutput(z((0, 4)), z((0,)), z((0, self.rep_dim())), z((0, self._pooled_dim())))
        resized = ff.images.image_sizes[0]
        inner = resize_boxes(boxes, ff.size, resized)
        pooled = heads.box_roi_pool(ff.features, [inner], ff.images.image_sizes)
        rep = heads.box_head(pooled)
        logits, deltas = heads.box_predictor(rep)
        pred = heads.box_coder.decode(deltas, [inner])[:, 1]        # (N, 4): the person class
        pred = clip_boxes_to_image(resize_boxes(pred, resized, ff.size), ff.size)
        scores = F.softmax(logits, dim=-1)[:, 1]
        return RoIOutput(pred, scores, rep, pooled.mean(dim=(2, 3)))

    def _pooled_dim(self) -> int:
        return int(self.detector.backbone.out_channels)

    def detect(self, ff: FrameFeatures) -> tuple[Tensor, Tensor]:
        """The detector on frame ``ff`` (RPN, box head, its own NMS): ``boxes (D, 4)``, ``scores (D,)``."""
        det = self.detector
        proposals, _ = det.rpn(ff.images, ff.features)
        out, _ = det.roi_heads(ff.features, proposals, ff.images.image_sizes)
        out = det.transform.postprocess(out, ff.images.image_sizes, [ff.size])[0]
        person = out["labels"] == 1
        return out["boxes"][person], out["scores"][person]

    def embed(self, out: RoIOutput, kind: str = "box_head") -> Tensor:
        """L2-normalised appearance vectors ``(N, D)`` of the boxes of ``out``: ``reid_head(rep)``
        when the net has a head, else ``rep`` (``kind="box_head"``) or the pooled FPN features
        (``kind="roi_pool"``)."""
        if kind == "roi_pool":
            x = out.pooled
        elif self.reid_head is not None:
            x = self.reid_head(out.rep)
        else:
            x = out.rep
        return F.normalize(x, dim=-1, eps=1e-8)


def load_tracktor_net(path: str | Path, device: str | torch.device = "cpu") -> TracktorNet:
    """A :class:`TracktorNet` in eval mode from ``path``: a detector checkpoint of
    ``train.py --detector`` (or its exported weights, e.g. the shipped detector), a Tracktor state
    dict (``train.py --tracker tracktor``'s ``tracktor_deepmot.pth``, bare or as a checkpoint's
    ``"model"``; it carries its architecture in ``_extra_state``) or a bare torchvision
    ``fasterrcnn_resnet50_fpn`` state dict (2 classes; loaded strictly into the ``resnet50_fpn``
    layout). Raises ``DataFormatError`` naming the file when it is none of these."""
    from deepmot.config import config_from_dict
    from deepmot.errors import DataFormatError
    from deepmot.runtime.checkpoint import torch_load
    from trackers.detection.model import ModelConfig, build_detector, load_detector_weights

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    obj = torch_load(path, "cpu", "not a readable weights file")
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    extra = state.get("_extra_state") if isinstance(state, dict) else None
    if isinstance(extra, dict) and extra.get("model_config"):   # a TracktorNet state dict
        net = TracktorNet(build_detector(config_from_dict(ModelConfig, extra["model_config"])), extra.get("reid_dim"))
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise DataFormatError(f"Tracktor weights do not fit their own architecture ({str(e)[:200]})",
                                  path) from None
    elif isinstance(obj, dict) and "model_config" in obj and isinstance(obj.get("model"), dict):
        det = build_detector(config_from_dict(ModelConfig, obj["model_config"]))
        det.load_state_dict(obj["model"])
        net = TracktorNet(det)
    else:   # a torchvision / Tracktor Faster R-CNN state dict
        det = build_detector(ModelConfig(layout="resnet50_fpn"))
        load_detector_weights(det, path)
        net = TracktorNet(det)
    return net.to(device).eval()
