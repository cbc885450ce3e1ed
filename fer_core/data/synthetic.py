"""SynthFER: the built-in, download-free, *synthetic* facial-expression data set.

Why it exists: FER2013 cannot be shipped with the project, yet every feature (training, evaluation,
the confusion matrix, the error gallery, attributions, the tests and the CI) has to be usable and
testable offline. SynthFER fills that gap with procedurally drawn 48x48 grayscale faces. They are
*not* photographs of people, and anything that shows them must say "synthetic".
(One file over the usual size: the face renderer and its action units are one drawing procedure,
and its random stream must stay in one place for the faces to stay reproducible.)

Why it is not a toy: the expressions are composed from FACS action units (AUs), the building blocks
used to describe real facial expressions, so the classes overlap the way FER2013's do::

    happy    AU6 + AU12                 sad      AU1 + AU4 + AU15
    surprise AU1 + AU2 + AU5 + AU26     fear     AU1 + AU2 + AU4 + AU5 + AU20 + AU26
    angry    AU4 + AU5 + AU7 + AU23     disgust  AU9 + AU10 + AU15
    neutral  (none; faint random "resting face" AU activity only)

Fear and surprise share four AUs, angry and disgust both lower the brows and tense the face, and a
weak sad face is nearly neutral. Every AU gets a continuous random intensity per face, so weak
expressions are genuinely ambiguous: a small CNN scores well below 100%, with its confusions where
FER2013's are. On top of that each face has a random identity (face shape, feature spacing, skin,
hair and background tone), pose (rotation, scale, shift, a little yaw), a lighting gradient, blur,
sensor noise, occluders (hand, bar, glasses/sunglasses) and a small rate of wrong labels. Class
frequencies follow FER2013's Training split (disgust about 1.5%).

How: vectorised numpy on the 48x48 pixel grid for a chunk of faces at once. Shapes are analytic and
antialiased from approximate signed distances; pose is applied by transforming the sampling
coordinates (no resampling); features are evaluated only inside a small per-face pixel window.
All randomness comes from one ``numpy.random.Generator`` seeded by ``seed``, so the same arguments
give byte-identical arrays on every run.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fer_core.labels import EMOTIONS, NUM_CLASSES

__all__ = ["SYNTH_CLASS_FREQ", "clean_labels", "generate"]

_FER2013_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
SYNTH_CLASS_FREQ: tuple[float, ...] = tuple(c / sum(_FER2013_TRAIN_COUNTS) for c in _FER2013_TRAIN_COUNTS)
"""Per-class sampling probabilities in :data:`fer_core.labels.EMOTIONS` order (FER2013 Training)."""

_SIZE = 48
_NPIX = _SIZE * _SIZE
_CHUNK = 64  # faces drawn at once: small temporaries stay in cache (measured faster than 128+)
_F = np.float32

# ---- action units: which make up each class (FACS prototypes, in EMOTIONS order) ------------------
_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 20, 23, 26)
_AU = {au: i for i, au in enumerate(_AUS)}
_CLASS_AUS: dict[str, tuple[int, ...]] = {
    "angry": (4, 5, 7, 23),
    "disgust": (9, 10, 15),
    "fear": (1, 2, 4, 5, 20, 26),
    "happy": (6, 12),
    "sad": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
    "neutral": (),
}
assert tuple(_CLASS_AUS) == EMOTIONS

# ---- difficulty knobs (tuned so a small CNN scores ~80-95% with FER2013-like confusions) ----------
# Per-class overall expression strength range (uniform); each AU then varies around it.
_STRENGTH: dict[str, tuple[float, float]] = {
    "angry": (0.35, 1.0), "disgust": (0.45, 1.0), "fear": (0.3, 1.0), "happy": (0.35, 1.0),
    "sad": (0.15, 0.9), "surprise": (0.3, 1.0), "neutral": (0.0, 0.0),
}
# Per-class AU gains: <1 makes a prototype AU weaker (so neighbouring classes blur together).
_AU_GAIN: dict[str, dict[int, float]] = {"disgust": {15: 0.6}}
# Optional extra AUs seen in real variants of a class: (class, AU) -> (probability, max intensity).
# They pull angry and disgust towards each other (both tense the face and lower the brows).
_EXTRA_AUS: dict[tuple[str, int], tuple[float, float]] = {
    ("disgust", 4): (0.8, 0.8), ("disgust", 7): (0.5, 0.7),
    ("angry", 9): (0.35, 0.6), ("angry", 10): (0.35, 0.7),
    ("happy", 26): (0.15, 0.5),
}
_AU_JITTER = 0.2  # per-AU spread around the face's strength
_REST_AU_PROB = 0.3  # chance that an AU shows faint "resting face" activity (every class)
_REST_AU_MAX = 0.2  # ... and its maximum intensity
_OCCLUDER_PROB = (0.06, 0.05, 0.08)  # hand, bar, glasses (mutually exclusive)

# ---- pose bounds (image coordinates span [-1, 1]; face units: face half-width ~0.75) --------------
_SCALE = (1.15, 1.45)
_ROT_MAX = 0.3  # radians


# ==================================================================================================
# public API
# ==================================================================================================
def generate(n: int = 12000, seed: int = 0, label_noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic faces.

    Returns ``(x, y)``: ``x`` uint8 ``(n, 48, 48)`` and ``y`` int64 ``(n,)`` in EMOTIONS order.
    ``label_noise`` is the fraction of faces whose label is replaced by a random *other* class
    (the image keeps its original expression), mimicking FER2013's annotation errors.
    Deterministic: the same ``(n, seed, label_noise)`` gives byte-identical arrays.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    rng = np.random.default_rng(seed)
    y = _draw_labels(rng, n)
    params = _sample_params(rng, y)
    x = np.empty((n, _SIZE, _SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        x[sl] = _render({k: v[sl] for k, v in params.items()}, rng)
    flip = rng.random(n) < label_noise
    y_out = y.copy()
    y_out[flip] = (y[flip] + rng.integers(1, NUM_CLASSES, size=int(flip.sum()))) % NUM_CLASSES
    return x, y_out


def clean_labels(n: int = 12000, seed: int = 0) -> np.ndarray:
    """The labels of ``generate(n, seed, ...)`` before the planted label flips (int64 ``(n,)``).

    Why: the flips are SynthFER's known ground truth of wrong labels, e.g. to measure a label-issue
    ranking (``clean_labels(n, seed) != generate(n, seed, label_noise)[1]``). It equals
    ``generate(n, seed, label_noise=0)[1]`` without drawing the faces: the labels are the random
    stream's first draw and the flips its last.
    """
    return _draw_labels(np.random.default_rng(seed), int(n))


def _draw_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(NUM_CLASSES, size=n, p=np.asarray(SYNTH_CLASS_FREQ)).astype(np.int64)


# ==================================================================================================
# per-face parameters
# ==================================================================================================
def _sample_params(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    """Every random per-face number, drawn up front, each shaped (n, 1, 1) for broadcasting."""
    n = len(y)
    n_au = len(_AUS)

    def U(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n)

    def coin(prob: float) -> np.ndarray:
        return (rng.random(n) < prob).astype(float)

    p: dict[str, np.ndarray] = {}
    # --- expression: AU intensities in [0, 1]
    lo = np.array([_STRENGTH[e][0] for e in EMOTIONS])[y]
    hi = np.array([_STRENGTH[e][1] for e in EMOTIONS])[y]
    strength = lo + (hi - lo) * rng.random(n)
    gain = np.zeros((NUM_CLASSES, n_au))
    extra_p = np.zeros((NUM_CLASSES, n_au))
    extra_max = np.zeros((NUM_CLASSES, n_au))
    for c, name in enumerate(EMOTIONS):
        for au in _CLASS_AUS[name]:
            gain[c, _AU[au]] = _AU_GAIN.get(name, {}).get(au, 1.0)
    for (name, au), (prob, mx) in _EXTRA_AUS.items():
        extra_p[EMOTIONS.index(name), _AU[au]] = prob
        extra_max[EMOTIONS.index(name), _AU[au]] = mx
    per_au = np.clip(strength[:, None] + rng.normal(0.0, _AU_JITTER, (n, n_au)), 0.05, 1.0) * gain[y]
    extra = (rng.random((n, n_au)) < extra_p[y]) * rng.random((n, n_au)) * extra_max[y]
    rest = (rng.random((n, n_au)) < _REST_AU_PROB) * rng.uniform(0.0, _REST_AU_MAX, (n, n_au))
    au = np.maximum(np.maximum(per_au, extra), rest)
    for a, i in _AU.items():
        p[f"au{a}"] = au[:, i]

    # --- pose
    rot = rng.normal(0.0, 0.09, n).clip(-_ROT_MAX, _ROT_MAX)
    p["rot_c"], p["rot_s"] = np.cos(rot), np.sin(rot)
    p["scale"] = U(*_SCALE)
    p["tx"] = rng.normal(0.0, 0.05, n).clip(-0.15, 0.15)
    p["ty"] = rng.normal(0.0, 0.05, n).clip(-0.15, 0.15)
    p["yaw"] = rng.normal(0.0, 0.03, n).clip(-0.08, 0.08)

    # --- identity (face units, y points down; the face centre is the origin)
    p["face_a"] = U(0.66, 0.8)
    p["face_b"] = U(0.92, 1.05)
    p["taper"] = U(0.15, 0.4)
    p["skin"] = U(0.35, 0.85)
    p["shade"] = U(0.1, 0.35)
    p["bg"] = U(0.0, 1.0)
    p["bg_gx"] = U(-0.2, 0.2)
    p["bg_gy"] = U(-0.2, 0.2)
    p["hair"] = np.where(rng.random(n) < 0.75, U(0.02, 0.3), U(0.3, 0.85))
    p["has_hair"] = coin(0.85)
    p["hairline"] = U(-0.85, -0.55)
    p["hair_curve"] = U(0.1, 0.6)
    p["eye_y"] = U(-0.25, -0.15)
    p["eye_dx"] = U(0.26, 0.33)
    p["eye_w"] = U(0.11, 0.14)
    p["eye_h"] = U(0.05, 0.07)
    p["iris"] = U(0.02, 0.25)
    p["sclera"] = U(0.65, 0.95)
    p["brow_gap"] = U(0.12, 0.17)
    p["brow_in"] = U(0.07, 0.11)
    p["brow_len"] = U(0.34, 0.42)
    p["brow_th"] = U(0.035, 0.06)
    p["brow_arch"] = U(0.01, 0.05)
    p["brow_tone"] = U(0.2, 0.6)
    p["nose_len"] = U(0.3, 0.38)
    p["nose_w"] = U(0.06, 0.09)
    p["mouth_gap"] = U(0.19, 0.25)
    p["mouth_w"] = U(0.19, 0.24)
    p["lip"] = U(0.035, 0.055)
    p["lip_tone"] = U(0.55, 0.85)
    p["rest_curve"] = rng.normal(0.0, 0.012, n)
    p["teeth"] = coin(0.75)
    p["mouth_dark"] = U(0.05, 0.25)

    # --- occluders: 0 none, 1 hand, 2 bar, 3 glasses
    r = rng.random(n)
    e1, e2, e3 = np.cumsum(_OCCLUDER_PROB)
    p["occ"] = np.select([r < e1, r < e2, r < e3], [1.0, 2.0, 3.0], 0.0)
    p["occ_x"] = U(-0.7, 0.7)
    p["occ_y"] = U(-0.1, 1.0)
    p["occ_a"] = U(0.25, 0.5)
    p["occ_b"] = U(0.12, 0.3)
    occ_rot = U(-math.pi, math.pi)
    p["occ_c"], p["occ_s"] = np.cos(occ_rot), np.sin(occ_rot)
    p["occ_tone"] = U(0.0, 1.0)
    p["sunglasses"] = coin(0.3)

    # --- photometry
    p["light"] = U(0.0, 0.5)
    light_dir = U(-math.pi, math.pi)
    p["light_c"], p["light_s"] = np.cos(light_dir), np.sin(light_dir)
    p["contrast"] = U(0.75, 1.25)
    p["bright"] = U(-0.1, 0.1)
    p["blur"] = U(0.3, 1.0)
    p["noise"] = U(0.004, 0.03)
    return {k: v.astype(_F).reshape(n, 1, 1) for k, v in p.items()}


# ==================================================================================================
# drawing helpers (arrays broadcast as (faces, rows, cols); distances in face units)
# ==================================================================================================
def _ellipse(u: np.ndarray, v: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (good near its rim)."""
    q = np.square(u * (1.0 / a))
    q += np.square(v * (1.0 / b))
    d = np.sqrt(q, out=q)
    d -= 1.0
    d *= np.minimum(a, b)
    return d


def _stroke(u: np.ndarray, v: np.ndarray, x0, y0, x1, y1, half_th) -> np.ndarray:
    """Signed distance-like field of a straight, mostly horizontal stroke (x0 < x1) with square
    ends; call with (v, u, y0, x0, y1, x1) for a mostly vertical one."""
    slope = (y1 - y0) / (x1 - x0)
    d = v - (y0 - x0 * slope)
    d -= u * slope
    np.abs(d, out=d)
    d *= 1.0 / np.sqrt(1.0 + slope * slope)
    d -= half_th
    e = np.abs(u - (x0 + x1) * 0.5)
    e -= (x1 - x0) * 0.5
    return np.maximum(d, e, out=d)


class _Win:
    """A per-face pixel window of the chunk's image, with face coordinates for its pixels.

    ``u`` is mirrored (|u - yaw|) so symmetric features are drawn once; ``uf`` keeps the sign.
    ``side`` (+1/-1) limits drawing to one half of the face when two windows overlap.
    """

    def __init__(self, fr: "_Frame", uf: np.ndarray, v: np.ndarray, img: np.ndarray,
                 at: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, side: float = 0.0) -> None:
        self.frame, self.at = fr, at
        self.uf, self.v, self.img = uf, v, img
        self.u = np.abs(uf)
        self.inv_px = fr.inv_px
        self.mask = None if side == 0.0 else (uf * side > 0).astype(_F)

    def cover(self, d: np.ndarray, soft: float = 1.0) -> np.ndarray:
        d *= self.inv_px * (-1.0 / soft)
        d += 0.5
        c = np.clip(d, 0.0, 1.0, out=d)
        return c if self.mask is None else c * self.mask

    def paint(self, d: np.ndarray, tone, alpha=None, soft: float = 1.0) -> None:
        """Cover the region ``d < 0`` (``d`` is consumed) with ``tone`` at opacity ``alpha``."""
        c = self.cover(d, soft)
        if alpha is not None:
            c *= alpha
        self.img += c * (tone - self.img)

    def darken(self, d: np.ndarray, amount, soft: float = 1.0) -> None:
        """Multiply the region ``d < 0`` (``d`` is consumed) by ``1 - amount``."""
        c = self.cover(d, soft)
        c *= -amount
        c += 1.0
        self.img *= c

    def commit(self) -> None:
        if self.at is not None:
            self.frame.windows[self.at] = self.img


class _Frame:
    """Sampling coordinates of a chunk of faces: pixel -> face units through each face's pose."""

    def __init__(self, p: dict[str, np.ndarray]) -> None:
        m = p["scale"].shape[0]
        self.g = (np.arange(_SIZE, dtype=_F) + 0.5) * (2.0 / _SIZE) - 1.0
        self.X, self.Y = self.g[None, None, :], self.g[None, :, None]
        self.c, self.s, self.sc = p["rot_c"], p["rot_s"], p["scale"]
        self.tx, self.ty, self.yaw = p["tx"], p["ty"], p["yaw"]
        self.inv_px = self.sc * (_SIZE / 2.0)  # pixels per face unit
        self.img = np.empty((m, _SIZE, _SIZE), dtype=_F)
        self._faces = np.arange(m)

    def coords(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates -> (yawed feature u, v) in face units."""
        Xs, Ys = (X - self.tx) / self.sc, (Y - self.ty) / self.sc
        return self.c * Xs + self.s * Ys - self.yaw, self.c * Ys - self.s * Xs

    def full(self) -> _Win:
        uf, v = self.coords(self.X, self.Y)
        return _Win(self, uf, v, self.img)

    def window(self, cu, cv, half_w: float, half_h: float, side: float = 0.0) -> _Win:
        """Window holding the face-unit box centred on feature point (cu, cv), at any pose."""
        ph, pw = _win_pixels(half_h, half_w), _win_pixels(half_w, half_h)
        cu = cu + self.yaw
        col = (self.sc * (self.c * cu - self.s * cv) + self.tx + 1.0) * (_SIZE / 2.0) - 0.5
        row = (self.sc * (self.s * cu + self.c * cv) + self.ty + 1.0) * (_SIZE / 2.0) - 0.5
        c0 = np.clip(np.rint(col - (pw - 1) / 2.0), 0, _SIZE - pw).astype(np.intp)[:, 0, 0]
        r0 = np.clip(np.rint(row - (ph - 1) / 2.0), 0, _SIZE - ph).astype(np.intp)[:, 0, 0]
        X = self.g[c0[:, None] + np.arange(pw)][:, None, :]
        Y = self.g[r0[:, None] + np.arange(ph)][:, :, None]
        uf, v = self.coords(X, Y)
        self.windows = sliding_window_view(self.img, (ph, pw), axis=(1, 2), writeable=True)
        at = (self._faces, r0, c0)
        return _Win(self, uf, v, self.windows[at], at, side)


def _win_pixels(half_len: float, half_other: float) -> int:
    """Pixels along one image axis covering a box of half-sizes (half_len along that axis,
    half_other across it) in face units, at the largest scale and rotation allowed."""
    ext = half_len + half_other * math.sin(_ROT_MAX)
    return min(int(math.ceil(2.0 * ext * _SCALE[1] * _SIZE / 2.0)) + 3, _SIZE)


# ==================================================================================================
# the face
# ==================================================================================================
def _render(p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    fr = _Frame(p)
    a = {au: p[f"au{au}"] for au in _AUS}
    _draw_head(fr, p, a)
    geo = _geometry(p, a)
    for side in (1.0, -1.0):
        w = fr.window(side * 0.3, p["eye_y"] - 0.12, 0.31, 0.31, side)
        _draw_eye_region(w, p, a)
        w.commit()
    w = fr.window(0.0, p["eye_y"] + 0.24, 0.2, 0.22)
    _draw_nose(w, p, a, geo)
    w.commit()
    w = fr.window(0.0, (geo["ny"] + geo["my"]) * 0.5 + 0.13, 0.47, 0.32)
    _draw_mouth(w, p, a, geo)
    w.commit()
    _draw_occluders(fr, p)
    return _photometry(fr, p, rng)


def _geometry(p: dict[str, np.ndarray], a: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Nose and mouth positions after the AUs have moved them (shared by two windows)."""
    g: dict[str, np.ndarray] = {}
    g["ny"] = p["eye_y"] + p["nose_len"] - 0.03 * a[9] - 0.015 * a[10]
    g["nw"] = p["nose_w"] * (1.0 + 0.25 * a[9])
    g["my"] = g["ny"] + p["mouth_gap"] + 0.02 * a[26]
    g["mw"] = p["mouth_w"] * (1.0 + 0.25 * a[12] + 0.35 * a[20] - 0.22 * a[23] - 0.15 * a[26] * (1.0 - a[20]))
    g["lift"] = p["rest_curve"] + 0.16 * a[12] - 0.075 * a[15] - 0.025 * a[20]  # corner height, up > 0
    return g


def _draw_head(fr: _Frame, p: dict[str, np.ndarray], a: dict[int, np.ndarray]) -> None:
    """Background, hair, neck and the shaded face oval (full frame, few operations)."""
    w = fr.full()
    w.img[...] = p["bg"] + p["bg_gx"] * fr.X + p["bg_gy"] * fr.Y
    u, v = w.uf + fr.yaw, w.v  # the outline does not yaw
    fa = p["face_a"]
    fb = p["face_b"] + 0.07 * a[26] * (v > 0)  # AU26 drops the jaw
    w.paint(_ellipse(u, v + 0.12, fa * 1.1, fb * 1.02), p["hair"], alpha=p["has_hair"])
    w.paint(np.maximum(np.abs(u) - 0.55 * fa, 0.5 - v), p["skin"] * 0.7)  # neck
    aj = fa * (1.0 - p["taper"] * np.clip(v, 0.0, None) / fb)
    r2 = np.square(u / aj) + np.square(v / fb)
    face = (np.sqrt(r2) - 1.0) * fa
    fringe = np.maximum(v - (p["hairline"] + p["hair_curve"] * u * u), face)
    w.paint(face, p["skin"] * (1.0 - p["shade"] * np.minimum(r2, 1.0)))
    w.paint(fringe, p["hair"], alpha=p["has_hair"])


def _draw_eye_region(w: _Win, p, a) -> None:
    """One side of the upper face: eye socket, lids (AU5 raises the upper one, AU6/AU7 raise the
    lower one), iris and lashes; brow (AU1 raises its inner end, AU2 its outer end, AU4 lowers it
    and draws it inwards); AU4 glabella line, AU1/AU2 forehead wrinkles, AU6 under-eye furrow and
    crow's feet; glasses."""
    u, v = w.u, w.v
    ey, ex, ew, eh = p["eye_y"], p["eye_dx"], p["eye_w"], p["eye_h"]
    skin = p["skin"]
    du, dv = u - ex, v - ey

    # AU6 (cheek raise): furrow under the lower lid, crow's feet
    w.darken(_stroke(u, v, ex - 0.12, ey + 0.11, ex + 0.1, ey + 0.1, 0.01), 0.3 * a[6])
    w.darken(_stroke(u, v, ex + ew + 0.03, ey - 0.01, ex + ew + 0.1, ey + 0.03, 0.008), 0.3 * a[6])
    # socket shadow, deeper under lowered brows
    w.darken(_ellipse(du, dv + 0.01, ew + 0.05, eh + 0.06), 0.12 + 0.15 * a[4] + 0.1 * a[9], soft=3.0)
    # the opening between the lids, iris, lashes along the upper lid
    t2 = np.clip(1.0 - np.square(du * (1.0 / ew)), 0.0, None)
    hu = eh * np.clip(1.0 + 0.9 * a[5] - 0.4 * a[7] - 0.3 * a[6] - 0.25 * a[4] * (1 - a[5]) - 0.2 * a[9], 0.1, None)
    hl = eh * np.clip(0.8 - 0.55 * a[7] - 0.6 * a[6] + 0.15 * a[5], 0.05, None)
    lid_u = -hu * t2
    opening = np.maximum(np.maximum(lid_u - dv, dv - hl * t2), (np.abs(du) - ew) * 0.5)
    iris = np.maximum(opening, np.sqrt(np.square(du + 0.01) + np.square(dv - 0.2 * eh)) - 0.8 * eh)
    w.paint(opening, p["sclera"] * np.minimum(skin * 1.4, 1.0))
    w.paint(iris, p["iris"])
    w.paint(np.maximum(np.abs(dv - lid_u + 0.006) - 0.016, np.abs(du) - ew), p["iris"] * 0.8)

    # brow: a thick curve from its inner end (bx0, y_in) to its outer end (bx0 + len, y_out)
    bx0 = p["brow_in"] - 0.045 * a[4]
    blen = p["brow_len"]
    y_in = ey - p["brow_gap"] - 0.12 * a[1] + 0.09 * a[4] * (1.0 - 0.6 * a[1]) + 0.07 * a[9]
    y_out = ey - p["brow_gap"] * 0.8 - 0.11 * a[2] - 0.03 * a[1] + 0.015 * a[4]
    arch = p["brow_arch"] + 0.04 * a[2] - 0.02 * a[4]
    t = (u - bx0) * (1.0 / blen)
    tc = np.clip(t, 0.0, 1.0)
    yb = y_in + (y_out - y_in) * tc - 4.0 * arch * tc * (1.0 - tc)
    th = p["brow_th"] * (1.25 - 0.5 * tc + 0.3 * a[4])
    brow = np.maximum(np.abs(v - yb) - th * 0.5, (np.abs(t - 0.5) - 0.5) * blen)
    w.paint(brow, skin * p["brow_tone"])
    # AU4 vertical glabella line; AU1 (centre) / AU2 (sides) horizontal forehead wrinkles
    w.darken(_stroke(v, u, y_in - 0.05, 0.035, y_in + 0.06, 0.04, 0.008), 0.4 * a[4])
    fw = np.minimum(np.clip(a[1] * (1.0 - u * 2.5), 0.0, None) + a[2] * np.clip(u * 2.8, 0.0, 1.0), 1.0)
    top = np.minimum(y_in, y_out) - 0.1 - 0.04 * u * u
    for k in range(2):
        w.darken(np.maximum(np.abs(v - top + 0.07 * k) - 0.008, u - 0.5), 0.28 * fw)

    # glasses (occluder 3); some are sunglasses
    g3 = (p["occ"] == 3).astype(_F)
    rim = _ellipse(du, dv + 0.005, ew + 0.07, eh + 0.08)
    frame = np.minimum(np.abs(rim) - 0.012, _stroke(u, v, -0.01, ey - 0.03, ex - ew - 0.07, ey - 0.03, 0.012))
    w.paint(rim, 0.05 + 0.1 * p["occ_tone"], alpha=g3 * p["sunglasses"])
    w.paint(frame, 0.08 + 0.15 * p["occ_tone"], alpha=g3)


def _draw_nose(w: _Win, p, a, geo) -> None:
    """Bridge shadows, tip, nostrils (raised and widened by AU9), AU9 wrinkles across the bridge."""
    u, v = w.u, w.v
    ey, ny, nw = p["eye_y"], geo["ny"], geo["nw"]
    w.darken(_stroke(v, u, ey + 0.05, 0.07, ny - 0.03, nw + 0.02, 0.015), 0.12, soft=2.0)
    w.darken(np.maximum(_ellipse(w.uf, v - ny + 0.005, nw + 0.03, 0.04), v - ny + 0.01), 0.1, soft=2.0)
    w.darken(_ellipse(u - nw * 0.6, v - ny, 0.04, 0.02), 0.55)
    for k in range(3):
        w.darken(np.maximum(np.abs(v - (ey + 0.06 + 0.045 * k)) - 0.008, u - 0.07), 0.35 * a[9])


def _draw_mouth(w: _Win, p, a, geo) -> None:
    """Mouth: corners follow AU12 (up) / AU15 (down), AU20 stretches it, AU26 drops the jaw, AU23
    thins the lips, AU10 lifts the upper lip; teeth show with AU10/AU12/AU20. Nasolabial folds
    (AU9/AU10/AU12), dimples (AU12), depressor lines (AU15), chin shadow."""
    u, v, uf = w.u, w.v, w.uf
    skin = p["skin"]
    ny, nw, my, mw, lift = geo["ny"], geo["nw"], geo["my"], geo["mw"], geo["lift"]
    fold_k = 0.08 + 0.3 * np.maximum(np.maximum(a[9], a[10]), 0.8 * a[12])
    w.darken(_stroke(v, u, ny - 0.01, nw + 0.05, my - lift + 0.05, mw + 0.05, 0.01), fold_k)

    mv = v - my
    tm = uf * (1.0 / mw)
    tm2 = np.square(tm)
    st = np.sqrt(np.clip(1.0 - tm2, 0.0, None))  # elliptic profile
    tm4 = np.square(tm2)
    sq = np.clip(1.0 - np.square(tm4), 0.0, None)  # squarer profile
    base = -lift * tm2
    o_up = 0.045 * a[10] + 0.03 * a[12] * p["teeth"] + 0.025 * a[26] + 0.01 * a[20]
    o_lo = 0.15 * a[26] + 0.03 * a[20] + 0.03 * a[12] * p["teeth"]
    k10, k20 = 0.6 * a[10], 0.6 * a[20]
    yu = base - o_up * (st * (1.0 - k10) + sq * k10)
    yl = base + o_lo * (st * (1.0 - k20) + sq * k20)
    lip_st = p["lip"] * (1.0 - 0.7 * a[23]) * st
    edge = np.abs(tm) - 1.0
    lips = np.maximum(np.maximum(yu - lip_st - mv, mv - yl - 1.2 * lip_st), edge * 0.9)
    hole = np.maximum(np.maximum(yu - mv, mv - yl) - 0.011, edge * mw)
    show = p["teeth"] * np.maximum(np.maximum(a[10], a[12]), a[20])
    teeth_h = np.minimum(0.035, 0.6 * (o_up + o_lo)) * show
    teeth = np.maximum(hole, mv - yu - teeth_h)
    w.paint(lips, skin * p["lip_tone"])
    w.paint(hole, p["mouth_dark"] * skin)
    w.paint(teeth, np.minimum(skin * 1.35, 0.95), alpha=np.clip(teeth_h * 150.0, 0.0, 1.0))
    cy = my - lift
    w.darken(_ellipse(u - mw - 0.03, v - cy, 0.02, 0.035), 0.3 * a[12])
    w.darken(_stroke(v, u, cy + 0.02, mw + 0.005, cy + 0.12, mw + 0.03, 0.009), 0.35 * a[15])
    w.darken(_ellipse(uf, v - my - 0.14 - 0.11 * a[26], 0.12, 0.04), 0.1 + 0.15 * a[23] + 0.1 * a[15], soft=2.0)


def _draw_occluders(fr: _Frame, p: dict[str, np.ndarray]) -> None:
    """Hand (skin-toned blob) and bar (microphone, strand, object) in image coordinates; only the
    faces that have one are touched. Glasses are drawn with the eyes."""
    occ = p["occ"][:, 0, 0]
    for kind in (1.0, 2.0):
        sel = np.flatnonzero(occ == kind)
        if not len(sel):
            continue
        q = {k: p[k][sel] for k in ("occ_x", "occ_y", "occ_a", "occ_b", "occ_c", "occ_s", "occ_tone", "skin")}
        co, so = q["occ_c"], q["occ_s"]
        ox, oy = fr.X - q["occ_x"], fr.Y - q["occ_y"]
        along, across = co * ox + so * oy, co * oy - so * ox
        if kind == 1.0:
            d, tone = _ellipse(along, across, q["occ_a"], q["occ_b"]), q["skin"] * (0.85 + 0.3 * q["occ_tone"])
        else:
            d, tone = np.maximum(np.abs(across) - q["occ_b"] * 0.4, np.abs(along) - 1.0), q["occ_tone"]
        cov = np.clip(0.5 - d * (_SIZE / 2.0), 0.0, 1.0)
        sub = fr.img[sel]
        sub += cov * (tone - sub)
        fr.img[sel] = sub


def _photometry(fr: _Frame, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Lighting gradient, contrast/brightness, per-face Gaussian blur, sensor noise -> uint8."""
    img = fr.img
    img *= 1.0 + p["light"] * (p["light_c"] * fr.X + p["light_s"] * fr.Y)
    img = (img - 0.5) * p["contrast"] + (0.5 + p["bright"])
    img = _blur(img, p["blur"][:, 0, 0])
    img += p["noise"] * rng.standard_normal(img.shape, dtype=_F)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur with a per-image sigma (pixels), edge padding."""
    r = 2
    k = np.exp(-0.5 * (np.arange(-r, r + 1)[None, :] / sigma.astype(np.float64)[:, None]) ** 2)
    k = (k / k.sum(axis=1, keepdims=True)).astype(_F)[:, :, None, None]  # float64 exp: same on every CPU
    pad = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = k[:, 0] * pad[:, 0:_SIZE]
    for i in range(1, 2 * r + 1):
        out += k[:, i] * pad[:, i:i + _SIZE]
    pad = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="edge")
    out = k[:, 0] * pad[:, :, 0:_SIZE]
    for i in range(1, 2 * r + 1):
        out += k[:, i] * pad[:, :, i:i + _SIZE]
    return out


def sample_picture(n: int = 3, seed: int = 1, face_px: int = 144, margin: int = 40) -> tuple[np.ndarray, list[str]]:
    """A picture of ``n`` SynthFER faces side by side on a plain background (RGB uint8) and their
    labels: an example for the Live page, so it shows detected and classified faces on first start
    without any photograph. The faces are synthetic, and the page says so."""
    from PIL import Image

    x, y = generate(n=max(n * 6, 24), seed=seed, label_noise=0.0)
    picks: list[int] = []
    for i, label in enumerate(y):  # distinct expressions read better than three happy faces
        if int(label) not in {int(y[j]) for j in picks}:
            picks.append(i)
        if len(picks) == n:
            break
    h, w = face_px + 2 * margin, n * (face_px + margin) + margin
    canvas = np.full((h, w), 200, np.uint8)
    for k, i in enumerate(picks):
        face = np.asarray(Image.fromarray(x[i]).resize((face_px, face_px), Image.BICUBIC))
        x0 = margin + k * (face_px + margin)
        canvas[margin:margin + face_px, x0:x0 + face_px] = face
    from fer_core.labels import EMOTIONS

    return np.repeat(canvas[..., None], 3, -1), [EMOTIONS[int(y[i])] for i in picks]
