"""The life cycle of training tracks in a DeepMOT clip (:class:`deepmot.engine.clips.ClipTracks`):
births for unmatched GT, template refresh of matched tracks, and the end of unmatched tracks —
at once (the reference loop) or after ``coast`` missed frames."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from deepmot.criterion import IdentityMemory
from deepmot.engine.clips import Clip, ClipTracks
from deepmot.engine.protocol import StepOutput


class FakeTracks:
    """A TrainTracks stand-in that records what the clip asks of it."""

    def __init__(self):
        self.ids, self.next_id, self.reinits = [], 1, []

    def __len__(self):
        return len(self.ids)

    def add(self, image, boxes, gen):
        new = list(range(self.next_id, self.next_id + len(boxes)))
        self.next_id += len(boxes)
        self.ids += new
        return new

    def reinit(self, image, ids, boxes, gen):
        self.reinits.append(list(ids))

    def remove(self, ids):
        self.ids = [i for i in self.ids if i not in set(ids)]

    def advance(self, out):
        pass


def _frame(clip: ClipTracks, gids: list[int], tp: list[list[bool]]) -> None:
    """Hand the clip one frame's GT and the criterion's TP mask (tracks x GT), then end the frame."""
    gboxes = torch.tensor([[10.0 * g, 0.0, 10.0 * g + 5, 5.0] for g in gids]).reshape(-1, 4)
    clip.frame_data = (None, torch.tensor(gids, dtype=torch.int64), gboxes)
    out = StepOutput(ids=list(clip.tracks.ids), boxes=torch.zeros(len(clip.tracks), 4))
    res = SimpleNamespace(memory=clip.memory, tp_mask=torch.tensor(tp, dtype=torch.bool).reshape(len(out.ids), len(gids)))
    clip.result = (out, res)
    clip.after_frame(refresh=False)


def _clip(coast: int) -> ClipTracks:
    c = ClipTracks(Clip(0, 1, 10), None, FakeTracks(), torch.Generator(), coast=coast)
    c.births(None, torch.tensor([7, 8]), torch.tensor([[70.0, 0, 75, 5], [80.0, 0, 85, 5]]))
    return c


def test_reference_loop_ends_unmatched_tracks_and_rebirths_their_objects():
    c = _clip(coast=0)
    assert c.tracks.ids == [1, 2] and c.gt_of == {1: 7, 2: 8}
    _frame(c, [7, 8], [[True, False], [False, False]])          # track 2 lost object 8
    assert c.tracks.ids == [1, 3] and c.gt_of == {1: 7, 3: 8}     # ended at once, 8 reborn as 3


def test_coasting_track_lives_coast_frames_and_blocks_a_second_track():
    c = _clip(coast=2)
    for _ in range(2):                                            # two missed frames: still alive
        _frame(c, [7, 8], [[True, False], [False, False]])
        assert c.tracks.ids == [1, 2] and c.gt_of == {1: 7, 2: 8} and c.misses[2] > 0
    _frame(c, [7, 8], [[True, False], [False, False]])            # third miss: ended, 8 reborn
    assert c.tracks.ids == [1, 3] and c.gt_of == {1: 7, 3: 8} and 2 not in c.misses


def test_coasting_track_that_matches_again_is_reset():
    c = _clip(coast=2)
    _frame(c, [7, 8], [[True, False], [False, False]])
    _frame(c, [7, 8], [[True, False], [False, True]])             # found its object again
    assert c.misses == {1: 0, 2: 0}
    for _ in range(2):
        _frame(c, [7, 8], [[True, False], [False, False]])
    assert c.tracks.ids == [1, 2]                                 # a fresh budget of 2 misses


def test_object_leaving_the_frame_keeps_its_coasting_track_then_ends_it():
    c = _clip(coast=1)
    _frame(c, [7], [[True], [False]])                             # object 8 left the frame
    assert c.tracks.ids == [1, 2]
    _frame(c, [7], [[True], [False]])
    assert c.tracks.ids == [1] and c.gt_of == {1: 7}


def test_end_all_clears_miss_counts():
    c = _clip(coast=3)
    _frame(c, [7, 8], [[True, False], [False, False]])
    c.end_all()
    assert c.tracks.ids == [] and c.misses == {} and c.gt_of == {}
    assert isinstance(c.memory, IdentityMemory) and len(c.memory) == 2   # memory kept across
