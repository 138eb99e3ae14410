"""Sequence: lazy frames with images, GT and detections from a MOTChallenge folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepmot.datasets import Sequence, read_seqinfo
from deepmot.errors import DataFormatError, MissingDataError

W, H, N = 48, 32, 6


def _make_seq(root: Path, width: int = W) -> Path:
    """A tiny MOTChallenge sequence; frame t's image is filled with value 10 * t."""
    d = root / "TINY-01"
    (d / "img1").mkdir(parents=True)
    (d / "gt").mkdir()
    (d / "det").mkdir()
    (d / "seqinfo.ini").write_text(
        f"[Sequence]\nname=TINY-01\nimDir=img1\nframeRate=10\nseqLength={N}\nimWidth={W}\nimHeight={H}\nimExt=.png\n"
    )
    for t in range(1, N + 1):
        cv2.imwrite(str(d / "img1" / f"{t:06d}.png"), np.full((H, width, 3), 10 * t, np.uint8))
    gt = []
    for t in range(1, N + 1):
        gt.append(f"{t},1,{t},2,10,20,1,1,0.75")
        if t % 2 == 0:
            gt.append(f"{t},5,3,4,5,6,0,7,1")
    (d / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (d / "det" / "det.txt").write_text(
        "1,-1,1.5,2,10,20,0.9,-1,-1,-1\n1,-1,30,2,10,20,0.2,-1,-1,-1\n4,-1,4,2,10,20,0.6,-1,-1,-1\n"
    )
    return d


def test_frames_carry_gt_and_detections(tmp_path: Path) -> None:
    seq = Sequence(_make_seq(tmp_path))
    assert len(seq) == N and seq.name == "TINY-01" and list(seq.frames) == list(range(1, N + 1))
    frames = list(seq)
    assert [f.index for f in frames] == list(range(1, N + 1))
    for f in frames:
        t = f.index
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert int(f.image[0, 0, 0]) == 10 * t
        n_gt = 2 if t % 2 == 0 else 1
        assert f.gt_ids.dtype == torch.int64 and f.gt_boxes.dtype == torch.float32
        assert f.gt_boxes.shape == (n_gt, 4)
        torch.testing.assert_close(f.gt_boxes[0], torch.tensor([t, 2.0, t + 10, 22]))
        assert f.gt_ids.tolist()[:1] == [1] and f.gt_cls.tolist()[0] == 1 and f.gt_flag.tolist()[0] == 1
        torch.testing.assert_close(f.gt_vis[0], torch.tensor(0.75))
        assert f.scored_gt_mask().tolist() == [True] + [False] * (n_gt - 1)
    assert frames[1].gt_cls.tolist() == [1, 7] and frames[1].gt_flag.tolist() == [1, 0]
    torch.testing.assert_close(frames[0].det_boxes, torch.tensor([[1.5, 2, 11.5, 22], [30, 2, 40, 22]]))
    torch.testing.assert_close(frames[0].det_scores, torch.tensor([0.9, 0.2]))
    assert frames[1].det_boxes.shape == (0, 4) and frames[1].det_scores.shape == (0,)
    assert seq[-1].index == N


def test_options_ranges_scores_and_no_images(tmp_path: Path) -> None:
    d = _make_seq(tmp_path)
    seq = Sequence(read_seqinfo(d), min_det_score=0.5, load_images=False, frame_range=(2, 4))
    assert len(seq) == 3 and seq[0].index == 2 and seq[0].image is None
    assert seq.frame(4).det_scores.tolist() == pytest.approx([0.6])
    with pytest.raises(IndexError):
        seq[3]
    with pytest.raises(IndexError):
        seq.frame(1)
    s1 = Sequence(d, min_det_score=0.5, load_images=False, frame_range=None)
    assert s1[0].det_scores.tolist() == pytest.approx([0.9])
    a = Sequence(d, load_images=False, frame_range="train-half")
    b = Sequence(d, load_images=False, frame_range="val-half")
    assert list(a.frames) + list(b.frames) == list(range(1, N + 1))
    none = Sequence(d, detections=None, load_images=False)
    assert none[0].det_boxes.shape == (0, 4)
    with pytest.raises(ValueError):
        Sequence(d, frame_range=(0, 3))


def test_missing_and_mismatched_data(tmp_path: Path) -> None:
    bad = _make_seq(tmp_path / "a", width=W + 2)
    seq = Sequence(bad)
    with pytest.raises(DataFormatError) as err:
        seq[0]
    assert err.value.field == "image size" and "000001.png" in str(err.value)
    d = _make_seq(tmp_path / "b")
    (d / "img1" / "000003.png").unlink()
    with pytest.raises(MissingDataError, match="000003"):
        Sequence(d)[2]
    with pytest.raises(MissingDataError, match="det"):
        Sequence(d, detections="det/other.txt")
    for f in (d / "img1").iterdir():
        f.unlink()
    (d / "img1").rmdir()
    with pytest.raises(MissingDataError, match="img1"):
        Sequence(d)
    assert len(Sequence(d, load_images=False)) == N
    with pytest.raises(MissingDataError, match="seqinfo"):
        Sequence(tmp_path)
    (d / "gt" / "gt.txt").write_text("1,1,1,2,3,4,1,1,1\n9,1,1,2,3,4,1,1,1\n")
    with pytest.raises(DataFormatError) as err:
        Sequence(d, load_images=False)
    assert (err.value.line, err.value.field) == (2, "frame")


def test_fixture_sequence_annotations_only(fixtures_dir: Path) -> None:
    seq = Sequence(fixtures_dir / "mot17" / "train" / "MOT17-09-FRCNN", detections=None, load_images=False)
    assert len(seq) == 525
    scored = sum(int(f.scored_gt_mask().sum()) for f in seq)
    assert scored == 5325  # EXPECTED.md: class 1 / flag 1 rows
    first = seq[0]
    torch.testing.assert_close(first.gt_boxes[0], torch.tensor([260.0, 450, 362, 712]))
