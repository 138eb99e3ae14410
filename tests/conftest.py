"""Shared test fixtures. Reference data comes from ``tests/fixtures`` (in the repository): PySOT's
tracking run on ``siamrpn_alex_dwxcorr`` without its weights (trimmed: its network outputs, crops
and the frame pixels they read), and a whole PySOT reference run on the project's tiny SiamRPN
with its weights (``pysot_tiny/``). The tests that run a network against PySOT's outputs run on
every reference :func:`pysot_ref` knows: the tiny one always, CI's full-size one
(``siamrpn_alex_dwxcorr``, 25 MB of test weights) only where ``../shared`` exists."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: Reference fixtures shipped with the repository (trimmed; sources and licences in its README).
IN_REPO = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path of ``../shared`` (reference fixtures and specs); skips the test when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip("../shared/fixtures is not present (a user's clone has no ../shared)")
    return SHARED


def _materialise(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst``, un-gzipping ``*.gz`` files (stored compressed to keep the clone small)."""
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.name == "README.md" and p.parent == src:
            continue
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                out.with_suffix("").write_bytes(f.read())
        else:
            shutil.copyfile(p, out)


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    """The reference fixtures: ``tests/fixtures`` of the repository first (MOT17-09 annotations and
    Lif_T results, matcher/loss references, PySOT key layouts, PySOT's tracking run without its
    weights, PySOT's run on the tiny SiamRPN with its weights), unpacked into a temporary folder;
    the full-size PySOT reference run with its weights (36 MB, not in the repository) is linked
    from ``../shared/fixtures`` when present (see :func:`pysot_ref`)."""
    root = tmp_path_factory.mktemp("fixtures")
    _materialise(IN_REPO, root)
    if (SHARED / "fixtures" / "pysot").is_dir():
        (root / "pysot").symlink_to(SHARED / "fixtures" / "pysot", target_is_directory=True)
    return root


#: PySOT reference runs with their weights, for the tests that run our network against PySOT's:
#: ``siamrpn_alex_tiny`` in the repository (``tests/fixtures/pysot_tiny``), ``siamrpn_alex_dwxcorr``
#: in CI's ``../shared/fixtures/pysot`` only.
PYSOT_REFERENCES = ("siamrpn_alex_tiny", "siamrpn_alex_dwxcorr")


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


class PySOTReference:
    """A PySOT reference run with its weights: PySOT's ``ModelBuilder`` and ``SiamRPNTracker`` (code
    at commit d04028f) run on the weights of config ``name``.

    ``weights`` the state-dict file; ``io`` PySOT's network inputs and outputs, ``(1, ...)``
    float32 tensors: ``z`` template crop, ``x`` search crop at the tracking size, ``x255`` a search
    crop at 255 px (PySOT's training size), ``zf`` template features, ``backbone_x`` search features of ``x``,
    ``cls``/``loc`` on ``x``, ``cls255``/``loc255`` on ``x255``; ``frames`` (T, H, W, 3) uint8 BGR
    and ``init_box`` (4,) x, y, w, h of the tracking run; ``ref`` its ``tracker.json`` (per frame
    ``bbox``, ``best_score``, ``center_pos``, ``size``; frame 0 the init state and
    ``channel_average``); ``cls``/``loc`` lists of PySOT's network outputs on frame ``t`` at
    ``t - 1``, ``anchors`` (K, 4) and ``window`` (K,) tensors; ``crops`` one dict per
    ``get_subwindow`` call of the run (``frame``, ``pos``, ``model_sz``, ``original_sz``,
    ``avg_chans`` and PySOT's result: ``pixels`` (3, X, X) uint8 or, where only its hash is
    stored, ``sha256`` of those bytes); ``track_cfg`` PySOT's ``cfg.TRACK`` and ``cfg.ANCHOR``
    values of the run (upper-case keys; :meth:`track_values` names them as ``TrackParams`` does).

    The tiny reference stores its crops as arguments + hashes; its ``io`` inputs are rebuilt from
    its frames with our ``get_subwindow`` and checked against PySOT's hashes before use, so the
    network is always fed PySOT's exact crops.
    """

    def __init__(self, d: Path, name: str):
        self.name, self.dir = name, d
        self.weights = d / "state_dict.pth"
        self.ref = json.loads((d / "tracker.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
        self.track_cfg = {**meta["cfg"]["TRACK"], **meta["cfg"]["ANCHOR"]}
        if (d / "model_io.pt").is_file():        # CI's full reference (../shared)
            self.io = torch.load(d / "model_io.pt", weights_only=True)
            with np.load(d / "frames.npz") as f:
                self.frames, self.init_box = f["frames"], f["init_box"].astype(np.float64)
            run = torch.load(d / "tracker_io.pt", weights_only=False)
            self.cls, self.loc = list(run["cls"]), list(run["loc"])
            self.anchors, self.window = run["anchors"], run["window"]
            self.crops = [{"frame": i, **a, "pixels": c[0].numpy().astype(np.uint8)}
                          for i, (c, a) in enumerate(zip(run["crops"], run["crop_args"]))]
        else:                                    # in the repository: frames delta-coded, crops hashed
            with np.load(d / "frames.npz") as f:
                self.frames = np.cumsum(f["frames_delta"], axis=0, dtype=np.uint8)
                self.init_box = f["init_box"]
            with np.load(d / "tracker_io.npz") as f:
                self.cls = [torch.from_numpy(c[None]) for c in f["cls"]]
                self.loc = [torch.from_numpy(c[None]) for c in f["loc"]]
                self.anchors, self.window = torch.from_numpy(f["anchors"]), torch.from_numpy(f["window"])
            crops = json.loads((d / "crops.json").read_text())
            self.crops = crops["tracker"]
            with np.load(d / "model_io.npz") as f:
                self.io = {k: torch.from_numpy(f[k][None]) for k in f.files}
            self.io.update(z=self.rebuild_crop(self.crops[0]), x=self.rebuild_crop(self.crops[1]),
                           x255=self.rebuild_crop(crops["x255"]))

    def rebuild_crop(self, c: dict) -> torch.Tensor:
        """Our ``get_subwindow`` with the arguments of PySOT's crop ``c``, ``(1, 3, X, X)`` float32;
        AssertionError unless it equals PySOT's result (pixels or SHA-256 of the uint8 bytes)."""
        from trackers.siamrpn.crop import get_subwindow

        got = get_subwindow(self.frames[c["frame"]], c["pos"], c["model_sz"], c["original_sz"], c["avg_chans"])
        u8 = got[0].numpy().astype(np.uint8)
        what = f"our get_subwindow on frame {c['frame']} ({c['model_sz']} px)"
        assert np.array_equal(u8.astype(np.float32), got[0].numpy()), f"{what} is not uint8-valued"
        if "pixels" in c:
            assert np.array_equal(u8, c["pixels"]), f"{what} differs from PySOT's crop"
        else:
            assert _sha256(u8) == c["sha256"], f"{what} differs from PySOT's crop (SHA-256 of its pixels)"
        return got

    def model(self, config: str | None = None, overrides=()):
        """Our SiamRPN for ``config`` (default: this reference's), PySOT's weights loaded strictly, eval mode."""
        from trackers.siamrpn import build_siamrpn
        from trackers.siamrpn.checkpoint import load_pysot_checkpoint

        m = build_siamrpn(config or self.name, list(overrides))
        report = load_pysot_checkpoint(m, self.weights)
        assert report.ok and len(report.loaded) == 75
        return m.eval()

    def track_values(self) -> dict:
        """PySOT's values of this run for the :class:`~trackers.siamrpn.params.TrackParams` fields its
        ``SiamRPNTracker`` reads (``cfg.TRACK`` / ``cfg.ANCHOR``)."""
        c = self.track_cfg
        return {"exemplar_size": c["EXEMPLAR_SIZE"], "instance_size": c["INSTANCE_SIZE"],
                "base_size": c["BASE_SIZE"], "context_amount": c["CONTEXT_AMOUNT"], "penalty_k": c["PENALTY_K"],
                "window_influence": c["WINDOW_INFLUENCE"], "lr": c["LR"], "stride": c["STRIDE"],
                "ratios": tuple(float(r) for r in c["RATIOS"]), "scales": tuple(float(r) for r in c["SCALES"])}


@pytest.fixture(scope="session", params=PYSOT_REFERENCES)
def pysot_ref(request, fixtures_dir: Path) -> PySOTReference:
    """Each PySOT reference run with weights in turn (:class:`PySOTReference`): ``siamrpn_alex_tiny``
    (in the repository, always), then ``siamrpn_alex_dwxcorr`` (CI's 25 MB test weights; skips
    the test when ``../shared/fixtures/pysot`` is absent: the same comparisons run on the tiny one)."""
    name = request.param
    if name == "siamrpn_alex_tiny":
        return PySOTReference(fixtures_dir / "pysot_tiny" / name, name)
    if not (fixtures_dir / "pysot").is_dir():
        pytest.skip("full-size PySOT reference (siamrpn_alex_dwxcorr, 25 MB of test weights) is only in "
                    "../shared/fixtures/pysot; the same comparisons ran on the in-repository siamrpn_alex_tiny")
    return PySOTReference(fixtures_dir / "pysot" / name, name)


class PySOTRun:
    """PySOT's ``SiamRPNTracker`` run on ``siamrpn_alex_dwxcorr`` without the network weights
    (``tests/fixtures/pysot_run``, trimmed from ``../shared/fixtures/pysot`` by its ``trim.py``).

    ``ref``: ``tracker.json`` (per frame ``bbox``, ``best_score``, ``center_pos``, ``size``; frame 0
    the init state and ``channel_average``); ``init_box`` (4,) x, y, w, h; ``anchors`` (K, 4) float32
    and ``window`` (K,) float64 tensors; ``cls[t - 1]``, ``loc[t - 1]`` PySOT's network outputs on
    frame ``t`` (``(1, 2A, S, S)``, ``(1, 4A, S, S)`` float32 tensors); ``crops[i]`` ``(1, 3, X, X)``
    float32 and ``crop_args[i]`` (``pos``, ``model_sz``, ``original_sz``, ``avg_chans``) of PySOT's
    ``get_subwindow`` calls (the template crop on frame 0, then one search crop per frame);
    ``frames[i]`` the top-left rectangle of frame ``i`` holding every pixel those crops read;
    ``frame_shape`` (H, W, 3) of the full frames.
    """

    def __init__(self, d: Path):
        self.ref = json.loads((d / "tracker.json").read_text())
        self.init_box = np.asarray(self.ref["init_box"], dtype=np.float64)
        with np.load(d / "tracker_io.npz") as z:
            a = {k: z[k] for k in z.files}
        n = len(a["crop_pos"])
        self.anchors = torch.from_numpy(a["anchors"])
        self.window = torch.from_numpy(a["window"])
        self.cls = [torch.from_numpy(c[None]) for c in a["cls"]]
        self.loc = [torch.from_numpy(c[None]) for c in a["loc"]]
        self.crops = [torch.from_numpy(a[f"crop{i}"][None].astype(np.float32)) for i in range(n)]
        self.crop_args = [{"pos": a["crop_pos"][i].tolist(), "model_sz": int(a["crop_model_sz"][i]),
                           "original_sz": int(a["crop_original_sz"][i]), "avg_chans": a["crop_avg_chans"][i].tolist()}
                          for i in range(n)]
        self.frames = [a[f"frame{i}"] for i in range(n)]
        self.frame_shape = tuple(int(v) for v in a["frame_shape"])

    def full_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` at full size: PySOT's pixels wherever its crops read, elsewhere a filler; on
        frame 0 (where ``init`` takes the padding colour) the filler makes every channel's pixel sum,
        hence ``img.mean(axis=(0, 1))``, equal to PySOT's ``channel_average`` exactly."""
        h, w = self.frames[i].shape[:2]
        img = np.zeros(self.frame_shape, np.uint8)
        img[:h, :w] = self.frames[i]
        if i == 0:
            rest = np.ones(self.frame_shape[:2], bool)
            rest[:h, :w] = False
            m = int(rest.sum())
            for c, avg in enumerate(self.ref["frames"][0]["channel_average"]):
                total = avg * self.frame_shape[0] * self.frame_shape[1]
                assert abs(total - round(total)) < 1e-3, "channel_average is not a pixel sum / pixel count"
                base, extra = divmod(round(total) - int(self.frames[i][..., c].sum(dtype=np.int64)), m)
                assert 0 <= base < 255
                fill = np.full(m, base, np.uint8)
                fill[:extra] += 1
                img[..., c][rest] = fill
        return img

    def network(self):
        """A stand-in for PySOT's network on this run: ``template``/``track`` map each of PySOT's input
        crops to PySOT's outputs on it, and fail (``AssertionError``) on any other input, so a tracker
        run on :meth:`full_frame` frames also checks that its crops are PySOT's."""
        return PySOTOutputs(self)


def _find_crop(x: torch.Tensor, crops: list[torch.Tensor], what: str) -> int:
    """Index of the crop in ``crops`` equal to ``x`` (to 1e-6); AssertionError naming the closest."""
    diffs = [float((x - c[0]).abs().max()) if c.shape[1:] == x.shape else float("inf") for c in crops]
    best = int(np.argmin(diffs))
    assert diffs[best] <= 1e-6, f"{what} equals none of PySOT's crops (closest: crop {best}, max diff {diffs[best]})"
    return best


class PySOTOutputs(nn.Module):
    """PySOT's recorded network on :class:`PySOTRun`: its outputs for its own input crops, nothing else."""

    def __init__(self, run: PySOTRun):
        super().__init__()
        self.device_anchor = nn.Parameter(torch.zeros(()))   # the tracker reads the device from here
        self.run = run

    def template(self, z: torch.Tensor) -> torch.Tensor:
        """Template "features": the template crops themselves, once checked to be PySOT's."""
        for row in z:
            _find_crop(row, self.run.crops[:1], "template crop")
        return z.clone()

    def track(self, zf: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PySOT's ``cls``, ``loc`` on each search crop of ``x`` (one row per target)."""
        ts = [_find_crop(row, self.run.crops[1:], "search crop") for row in x]
        return torch.cat([self.run.cls[t] for t in ts]), torch.cat([self.run.loc[t] for t in ts])


@pytest.fixture(scope="session")
def pysot_run(fixtures_dir: Path) -> PySOTRun:
    """PySOT's tracking run on ``siamrpn_alex_dwxcorr`` without the weights (in the repository):
    network outputs, crops, anchors, window and states, see :class:`PySOTRun`."""
    return PySOTRun(fixtures_dir / "pysot_run" / "siamrpn_alex_dwxcorr")


@pytest.fixture(scope="session")
def pysot_keys_dir(fixtures_dir: Path) -> Path:
    """PySOT / DaSiamRPN state-dict key layouts (``<config>.txt``: key, shape, dtype per line)."""
    return fixtures_dir / "pysot_keys"


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module with one torch intra-op thread (set up before its other fixtures).

    Tests on small tensors spend more on thread hand-offs than on arithmetic (about 5x the CPU
    time on a shared 2-core machine); modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
