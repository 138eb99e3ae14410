"""Drawing for the synthetic MOT17 set: textured backgrounds, person-like figures, visibility.

Pure numpy/OpenCV. Images are ``(H, W, 3)`` uint8 BGR; boxes are 0-based pixel ``x1, y1, x2, y2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Appearance", "random_appearance", "make_background", "draw_person", "visibility"]

# Torso colours (BGR). Few on purpose: many identities share one, so identity has to come from
# the combination with trousers and pattern (distinct yet confusable appearances).
_TORSO = np.array(
    [[40, 40, 200], [200, 60, 40], [40, 170, 40], [30, 200, 230], [180, 180, 180], [60, 60, 60],
     [150, 50, 150], [20, 110, 220]],
    dtype=np.float64,
)
_TROUSERS = np.array([[50, 40, 30], [120, 80, 40], [200, 200, 200], [40, 60, 90]], dtype=np.float64)
_SKIN = np.array([[140, 170, 220], [90, 120, 170], [60, 80, 110]], dtype=np.float64)


@dataclass(frozen=True)
class Appearance:
    """How one identity looks: BGR colours, a torso pattern (0 plain, 1 stripes, 2 vertical band,
    3 badge) and a walking phase offset."""

    torso: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    pattern: int
    pattern_color: tuple[int, int, int]
    phase: float


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> tuple[int, int, int]:
    c = np.clip(color + rng.uniform(-amount, amount, 3), 0, 255)
    return tuple(int(v) for v in c)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Draw an identity's appearance from small palettes with a little colour jitter."""
    return Appearance(
        torso=_jitter(rng, _TORSO[rng.integers(len(_TORSO))], 18),
        trousers=_jitter(rng, _TROUSERS[rng.integers(len(_TROUSERS))], 12),
        skin=_jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10),
        pattern=int(rng.integers(4)),
        pattern_color=_jitter(rng, _TORSO[rng.integers(len(_TORSO))], 25),
        phase=float(rng.uniform(0, 2 * np.pi)),
    )


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured street-like backdrop ``(height, width, 3)`` uint8: sky/wall gradient, smooth
    noise texture, building blocks with windows, a ground plane with paving lines."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    top = rng.uniform(90, 200, 3)
    bottom = rng.uniform(60, 150, 3)
    img = top * (1 - y) + bottom * y + np.zeros((height, width, 3))
    # Smooth blobby texture: coarse noise upsampled.
    coarse = rng.normal(0, 18, (max(2, height // 24), max(2, width // 24), 3)).astype(np.float32)
    img += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 3, (height, width, 1))
    img += fine
    horizon = int(height * 0.42)
    x = 0
    while x < width:  # buildings along the horizon
        bw = int(rng.integers(40, 140))
        bh = int(rng.integers(height // 6, horizon))
        col = rng.uniform(70, 190, 3)
        img[horizon - bh : horizon, x : x + bw] = img[horizon - bh : horizon, x : x + bw] * 0.35 + col * 0.65
        for wy in range(horizon - bh + 8, horizon - 12, 22):
            for wx in range(x + 6, x + bw - 12, 18):
                img[wy : wy + 10, wx : wx + 8] = rng.uniform(30, 90)
        x += bw + int(rng.integers(0, 30))
    ground = rng.uniform(80, 140, 3)
    img[horizon:] = img[horizon:] * 0.4 + ground * 0.6
    for gy in range(horizon + 10, height, 28):
        img[gy : gy + 2] *= 0.8
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_person(img: np.ndarray, box, app: Appearance, t: int, alpha: float = 1.0) -> None:
    """Draw a person-like figure filling the 0-based xyxy ``box`` onto ``img`` in place.

    ``t`` (frame number) animates the legs; ``alpha < 1`` blends it (reflections). Drawing is
    clipped to the image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    H, W = img.shape[:2]
    lo_x, lo_y = max(int(np.floor(x1)) - 1, 0), max(int(np.floor(y1)) - 1, 0)
    hi_x, hi_y = min(int(np.ceil(x2)) + 1, W), min(int(np.ceil(y2)) + 1, H)
    if hi_x <= lo_x or hi_y <= lo_y or w < 2 or h < 4:
        return
    canvas = img[lo_y:hi_y, lo_x:hi_x]
    work = canvas.copy() if alpha < 1.0 else canvas
    ox, oy = x1 - lo_x, y1 - lo_y  # box origin inside the crop
    cx = ox + w / 2

    def p(x: float, y: float) -> tuple[int, int]:
        return (int(round(x)), int(round(y)))

    swing = np.sin(0.35 * t + app.phase) * 0.12 * w
    leg_w = max(1, int(round(0.16 * w)))
    hip_y, foot_y = oy + 0.58 * h, oy + h - 1
    for side, s in ((-1, swing), (1, -swing)):
        hx = cx + side * 0.14 * w
        cv2.line(work, p(hx, hip_y), p(hx + s, foot_y), app.trousers, leg_w * 2)
    torso_c = p(cx, oy + 0.42 * h)
    axes = (max(1, int(round(0.46 * w))), max(1, int(round(0.2 * h))))
    cv2.ellipse(work, torso_c, axes, 0, 0, 360, app.torso, -1)
    if app.pattern == 1:
        for k in (-1, 0, 1):
            yy = oy + 0.42 * h + k * 0.09 * h
            cv2.line(work, p(cx - 0.38 * w, yy), p(cx + 0.38 * w, yy), app.pattern_color, max(1, int(0.03 * h)))
    elif app.pattern == 2:
        cv2.line(work, p(cx, oy + 0.26 * h), p(cx, oy + 0.58 * h), app.pattern_color, max(1, int(0.18 * w)))
    elif app.pattern == 3:
        cv2.circle(work, p(cx + 0.12 * w, oy + 0.36 * h), max(1, int(0.12 * w)), app.pattern_color, -1)
    cv2.circle(work, p(cx, oy + 0.11 * h), max(1, int(round(0.1 * h))), app.skin, -1)
    if alpha < 1.0:
        cv2.addWeighted(work, alpha, canvas, 1.0 - alpha, 0.0, dst=canvas)


def visibility(boxes: np.ndarray, depth: np.ndarray, occludes: np.ndarray | None = None) -> np.ndarray:
    """Fraction of each box not covered by boxes nearer the camera.

    ``boxes`` ``(K, 4)`` xyxy pixels, ``depth`` ``(K,)`` larger = nearer (e.g. the bottom y),
    ``occludes`` ``(K,)`` bool, False for objects that hide nothing (reflections). Coverage is
    rasterised on the integer pixel grid. Returns ``(K,)`` float64 in [0, 1].
    """
    k = boxes.shape[0]
    occludes = np.ones(k, bool) if occludes is None else occludes
    b = np.round(boxes).astype(np.int64)
    out = np.ones(k)
    for i in range(k):
        x1, y1, x2, y2 = b[i]
        if x2 <= x1 or y2 <= y1:
            continue
        nearer = np.flatnonzero(occludes & (depth > depth[i]) & (np.arange(k) != i))
        nearer = nearer[(b[nearer, 0] < x2) & (b[nearer, 2] > x1) & (b[nearer, 1] < y2) & (b[nearer, 3] > y1)]
        if nearer.size == 0:
            continue
        mask = np.zeros((y2 - y1, x2 - x1), bool)
        for j in nearer:
            mask[max(b[j, 1] - y1, 0) : b[j, 3] - y1, max(b[j, 0] - x1, 0) : b[j, 2] - x1] = True
        out[i] = 1.0 - mask.mean()
    return out
