"""Scene simulation for the synthetic MOT17 set: trajectories, distractors, GT rows, frames.

Everything is in 0-based pixel ``x1, y1, x2, y2`` image coordinates; a camera pan shifts a wider
backdrop. Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepmot.datasets.render import draw_person, make_background, random_appearance, visibility

__all__ = ["SceneSettings", "Scene", "simulate", "gt_rows", "render_frame", "person_height", "inside_fraction",
           "HORIZON"]

HORIZON = 0.42  # fraction of the image height where the ground starts


class SceneSettings(Protocol):
    """The fields of :class:`deepmot.datasets.synthetic.SyntheticConfig` a scene needs (typed
    here so that this module does not import the generator that imports it)."""

    width: int
    height: int
    min_frames: int
    max_frames: int
    min_objects: int
    max_objects: int
    static_persons: int
    reflections: int
    camera_pan: float


@dataclass
class Scene:
    """Per-frame object states of one sequence (0-based pixel xyxy boxes in image coordinates)."""

    length: int
    background: np.ndarray  # (H, W + pan range, 3)
    offsets: np.ndarray  # (L,) integer camera offset per frame (index t-1)
    objects: list[dict]  # id, cls, flag, app, alpha, kind, boxes {t: xyxy}


def person_height(cfg: SceneSettings, y_bottom: float, scale: float) -> float:
    """Perspective: people lower in the image (nearer) are taller."""
    H = cfg.height
    rel = (y_bottom - HORIZON * H) / ((1 - HORIZON) * H)
    return scale * H * (0.15 + 0.45 * max(rel, 0.05))


def simulate(cfg: SceneSettings, rng: np.random.Generator) -> Scene:
    """Simulate one sequence: length and crowd size drawn from ``cfg``; pedestrians (class 1)
    spawn at the borders to keep the crowd near its target size, walk with changing speeds and
    rare turns, and end for good once they leave the view; static persons (class 7) and window
    reflections (class 12) are added as distractors. Rounded boxes per frame, per object."""
    W, H = cfg.width, cfg.height
    L = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    n_target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    pan = float(rng.uniform(-cfg.camera_pan, cfg.camera_pan))
    span = int(np.ceil(abs(pan) * (L - 1))) + 1
    off0 = 0.0 if pan >= 0 else abs(pan) * (L - 1)
    offsets = np.round(off0 + pan * np.arange(L)).astype(np.int64)
    background = make_background(rng, W + span, H)
    speed_unit = W / 640.0
    objects: list[dict] = []
    next_id = 1

    def new_person(x: float, yb: float, direction: float) -> dict:
        nonlocal next_id
        obj = {
            "id": next_id, "cls": 1, "flag": 1, "kind": "pedestrian", "alpha": 1.0,
            "app": random_appearance(rng), "boxes": {},
            "x": x, "yb": yb, "vx": direction * rng.uniform(0.4, 3.0) * speed_unit,
            "vy": rng.uniform(-0.4, 0.4) * speed_unit, "scale": rng.uniform(0.8, 1.15),
            "aspect": rng.uniform(0.34, 0.44), "alive": True,
        }
        next_id += 1
        objects.append(obj)
        return obj

    for _ in range(max(1, int(round(0.8 * n_target)))):
        new_person(offsets[0] + rng.uniform(0.05, 0.95) * W, rng.uniform(0.55, 1.05) * H, rng.choice([-1.0, 1.0]))
    # Distractors: static persons anywhere on the panorama, reflections inside a shop window.
    statics = []
    for _ in range(cfg.static_persons):
        yb = rng.uniform(0.55, 0.95) * H
        h = person_height(cfg, yb, rng.uniform(0.85, 1.1))
        statics.append({"id": None, "cls": 7, "flag": 0, "kind": "static", "alpha": 1.0,
                        "app": random_appearance(rng), "boxes": {}, "x": rng.uniform(0.1, 0.9) * (W + span),
                        "yb": yb, "h": h, "w": h * rng.uniform(0.36, 0.44)})
    window = None
    n_refl = cfg.reflections
    if n_refl:
        wx1 = int(rng.uniform(0, 0.5) * (W + span))
        window = (wx1, int(0.06 * H), wx1 + int(0.45 * W), int(HORIZON * H) - 4)
        x1, y1, x2, y2 = window
        background[y1:y2, x1:x2] = (background[y1:y2, x1:x2] * 0.45 + np.array([90, 70, 50]) * 0.55).astype(np.uint8)

    for t in range(1, L + 1):
        off = offsets[t - 1]
        live = [o for o in objects if o["alive"]]
        if len(live) < n_target and rng.random() < 0.08:
            side = rng.choice([-1.0, 1.0])
            yb = rng.uniform(0.55, 1.05) * H
            w = person_height(cfg, yb, 1.0) * 0.4
            x = off - 0.4 * w if side > 0 else off + W + 0.4 * w
            new_person(x, yb, side)
        for o in objects:
            if not o["alive"]:
                continue
            if t > 1:  # move: speed changes, rare turns, vertical drift bounded to the ground
                if rng.random() < 0.02:
                    o["vx"] = np.sign(o["vx"]) * np.clip(abs(o["vx"]) * rng.uniform(0.5, 1.6), 0.2, 4.0)
                if rng.random() < 0.003:
                    o["vx"] = -o["vx"]
                o["x"] += o["vx"]
                o["yb"] += o["vy"]
                if not 0.5 * H <= o["yb"] <= 1.1 * H:
                    o["vy"] = -o["vy"]
                    o["yb"] = float(np.clip(o["yb"], 0.5 * H, 1.1 * H))
            h = person_height(cfg, o["yb"], o["scale"])
            w = h * o["aspect"]
            box = np.array([o["x"] - off - w / 2, o["yb"] - h, o["x"] - off + w / 2, o["yb"]])
            if box[2] < 0 or box[0] > W:
                if o["boxes"]:
                    o["alive"] = False  # left the view: the identity ends for good
                continue
            o["boxes"][t] = np.round(box)
        for s in statics:
            box = np.round(np.array([s["x"] - off - s["w"] / 2, s["yb"] - s["h"], s["x"] - off + s["w"] / 2, s["yb"]]))
            if box[2] > 0 and box[0] < W:
                s["boxes"][t] = box
    for s in statics:
        if s["boxes"]:
            s["id"] = next_id
            next_id += 1
            objects.append(s)
    if window is not None:
        x1, y1, x2, y2 = window
        h = 0.75 * (y2 - y1)
        w = 0.4 * h
        for _ in range(n_refl):
            start = int(rng.integers(1, max(2, L // 2)))
            speed = rng.uniform(0.6, 2.0) * speed_unit * rng.choice([-1.0, 1.0])
            x = x1 + w / 2 if speed > 0 else x2 - w / 2
            refl = {"id": next_id, "cls": 12, "flag": 0, "kind": "reflection", "alpha": 0.5,
                    "app": random_appearance(rng), "boxes": {}}
            next_id += 1
            ybase = y2 - rng.uniform(0, 0.2) * (y2 - y1)
            for t in range(start, L + 1):
                cx = x + speed * (t - start)
                if cx - w / 2 < x1 or cx + w / 2 > x2:
                    break
                off = offsets[t - 1]
                box = np.round(np.array([cx - off - w / 2, ybase - h, cx - off + w / 2, ybase]))
                if box[2] > 0 and box[0] < W:
                    refl["boxes"][t] = box
            if refl["boxes"]:
                objects.append(refl)
    objects = [o for o in objects if o["boxes"]]
    return Scene(L, background, offsets, objects)


def inside_fraction(box: np.ndarray, W: int, H: int) -> float:
    """Fraction of the area of 0-based xyxy ``box`` lying inside a ``W x H`` image, in [0, 1]."""
    iw = max(0.0, min(box[2], W) - max(box[0], 0.0))
    ih = max(0.0, min(box[3], H) - max(box[1], 0.0))
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    return iw * ih / area


def gt_rows(cfg: SceneSettings, scene: Scene) -> dict[str, np.ndarray]:
    """All GT rows (0-based xyxy) with visibility from the depth order; one entry per object
    per frame where at least 20 % of its box lies inside the image."""
    out = {k: [] for k in ("frame", "id", "box", "flag", "cls", "vis", "inside")}
    for t in range(1, scene.length + 1):
        here = [o for o in scene.objects if t in o["boxes"]]
        if not here:
            continue
        boxes = np.stack([o["boxes"][t] for o in here])
        refl = np.array([o["kind"] == "reflection" for o in here])
        depth = np.where(refl, -1e9, boxes[:, 3])
        vis = visibility(boxes, depth, occludes=~refl)
        for o, b, v in zip(here, boxes, vis):
            inside = inside_fraction(b, cfg.width, cfg.height)
            if inside < 0.2:
                continue
            for key, val in (("frame", t), ("id", o["id"]), ("box", b), ("flag", o["flag"]),
                             ("cls", o["cls"]), ("vis", round(float(v), 5)), ("inside", inside)):
                out[key].append(val)
    res = {k: np.asarray(v) for k, v in out.items()}
    res["box"] = res["box"].reshape(-1, 4).astype(np.float64)
    return res


def render_frame(scene: Scene, t: int, W: int) -> np.ndarray:
    """Frame ``t`` (1-based) as BGR uint8: backdrop crop, then objects far to near."""
    off = scene.offsets[t - 1]
    img = scene.background[:, off : off + W].copy()
    here = [o for o in scene.objects if t in o["boxes"]]
    here.sort(key=lambda o: (o["kind"] != "reflection", o["boxes"][t][3]))
    for o in here:
        step = 0 if o["kind"] == "static" else t
        draw_person(img, o["boxes"][t], o["app"], step, alpha=o["alpha"])
    return img
