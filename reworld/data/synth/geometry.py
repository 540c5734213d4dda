"""Centrelines made of constant-curvature pieces, exactly what nuScenes arcline paths can express.

A `Path` starts at a pose and is a chain of pieces, each with one curvature (1/m, positive turns left)
and a length. Offsets of such a path are again such paths, turns are built with a smooth (trapezoidal)
curvature profile so that a car following them has a continuous-ish yaw rate, and every piece is
written to the map as one arcline path ('LSL'/'RSR'), so the devkit's `discretize_lanes` gives back
the very centreline the cars drove.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TURN_PIECES = 16  # constant-curvature pieces that approximate a clothoid-arc-clothoid turn


def wrap_angle(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class Path:
    x0: float
    y0: float
    h0: float  # [rad]
    ks: tuple[float, ...]  # [1/m] curvature of each piece, + left
    lens: tuple[float, ...]  # [m] length of each piece

    @property
    def length(self) -> float:
        return float(sum(self.lens))

    def piece_poses(self) -> np.ndarray:
        """(n+1, 3) pose at the start of each piece, and the end pose last."""
        poses = [(self.x0, self.y0, self.h0)]
        for k, ln in zip(self.ks, self.lens):
            x, y, h = poses[-1]
            poses.append(_advance(x, y, h, k, ln))
        return np.array(poses, dtype=np.float64)

    def end_pose(self) -> tuple[float, float, float]:
        x, y, h = self.piece_poses()[-1]
        return float(x), float(y), float(h)

    def poses_at(self, s: np.ndarray) -> np.ndarray:
        """(N, 3) poses [x, y, heading] at arc lengths s (clamped to the path)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        starts = self.piece_poses()
        cum = np.concatenate([[0.0], np.cumsum(self.lens)])
        idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(self.lens) - 1)
        ds = s - cum[idx]
        k = np.asarray(self.ks)[idx]
        x, y, h = starts[idx, 0], starts[idx, 1], starts[idx, 2]
        straight = np.abs(k) < 1e-9
        ksafe = np.where(straight, 1.0, k)
        hn = h + k * ds
        xs = np.where(straight, x + ds * np.cos(h), x + (np.sin(hn) - np.sin(h)) / ksafe)
        ys = np.where(straight, y + ds * np.sin(h), y - (np.cos(hn) - np.cos(h)) / ksafe)
        return np.stack([xs, ys, hn], axis=1)

    def curvature_at(self, s: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0.0], np.cumsum(self.lens)])
        idx = np.clip(np.searchsorted(cum, np.asarray(s), side="right") - 1, 0, len(self.lens) - 1)
        return np.asarray(self.ks)[idx]

    def sample(self, step: float) -> np.ndarray:
        n = max(2, int(math.ceil(self.length / step)) + 1)
        return self.poses_at(np.linspace(0.0, self.length, n))

    def offset(self, d: float) -> "Path":
        """The parallel path d metres to the left (negative: right)."""
        x = self.x0 - d * math.sin(self.h0)
        y = self.y0 + d * math.cos(self.h0)
        ks = tuple(k / (1.0 - k * d) for k in self.ks)
        lens = tuple(ln * (1.0 - k * d) for k, ln in zip(self.ks, self.lens))
        if min(1.0 - k * d for k in self.ks) <= 0.05:
            raise ValueError(f"offset {d} m is beyond a curve's radius")
        return Path(x, y, self.h0, ks, lens)

    def reversed(self) -> "Path":
        x, y, h = self.end_pose()
        return Path(x, y, float(wrap_angle(h + np.pi)), tuple(-k for k in self.ks[::-1]), self.lens[::-1])

    def split(self, max_len: float) -> list["Path"]:
        """Consecutive sub-paths of at most max_len metres each (pieces are cut where needed)."""
        n = max(1, int(math.ceil(self.length / max_len - 1e-9)))
        cuts = np.linspace(0.0, self.length, n + 1)
        out = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            out.append(self.subpath(a, b))
        return out

    def subpath(self, a: float, b: float) -> "Path":
        x, y, h = self.poses_at(np.array([a]))[0]
        cum = np.concatenate([[0.0], np.cumsum(self.lens)])
        ks, lens = [], []
        for i, k in enumerate(self.ks):
            lo, hi = max(a, cum[i]), min(b, cum[i + 1])
            if hi - lo > 1e-9:
                ks.append(k)
                lens.append(hi - lo)
        return Path(float(x), float(y), float(h), tuple(ks), tuple(lens))

    def arclines(self, dx: float = 0.0, dy: float = 0.0) -> list[dict]:
        """nuScenes `arcline_path_3` records, one per piece, shifted by (dx, dy)."""
        out = []
        for (x, y, h), k, ln in zip(self.piece_poses()[:-1], self.ks, self.lens):
            if abs(k) < 1e-9:
                shape, seg, radius = "LSL", [0.0, ln, 0.0], 1000.0
            else:
                shape, seg, radius = ("LSL" if k > 0 else "RSR"), [ln, 0.0, 0.0], 1.0 / abs(k)
            out.append({
                "start_pose": [round(x + dx, 4), round(y + dy, 4), round(float(wrap_angle(h)), 6)],
                "end_pose": None,
                "shape": shape,
                "radius": round(radius, 4),
                "segment_length": [round(v, 4) for v in seg],
            })
        ends = self.piece_poses()[1:]
        for rec, (x, y, h) in zip(out, ends):
            rec["end_pose"] = [round(x + dx, 4), round(y + dy, 4), round(float(wrap_angle(h)), 6)]
        return out


def _advance(x, y, h, k, ln):
    if abs(k) < 1e-9:
        return x + ln * math.cos(h), y + ln * math.sin(h), h
    hn = h + k * ln
    return x + (math.sin(hn) - math.sin(h)) / k, y - (math.cos(hn) - math.cos(h)) / k, hn


def concat(first: Path, *rest: Path) -> Path:
    """Chain paths that meet end to start (the later start poses are taken from the first)."""
    ks, lens = list(first.ks), list(first.lens)
    for p in rest:
        ks += p.ks
        lens += p.lens
    return Path(first.x0, first.y0, first.h0, tuple(ks), tuple(lens))


def straight(x: float, y: float, h: float, length: float) -> Path:
    return Path(x, y, h, (0.0,), (float(length),))


def _unit_turn(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Curvatures and lengths of a turn of total length 1: ramp up, hold, ramp down."""
    u = (np.arange(TURN_PIECES) + 0.5) / TURN_PIECES
    shape = np.clip(np.minimum(u, 1.0 - u) / 0.3, 0.0, 1.0)
    lens = np.full(TURN_PIECES, 1.0 / TURN_PIECES)
    ks = shape * angle / float(np.sum(shape * lens))
    return ks, lens


def turn_tangent_length(angle: float) -> float:
    """Distance from a unit-length turn's start to the intersection of its end tangents."""
    ks, lens = _unit_turn(angle)
    x, y, h = Path(0.0, 0.0, 0.0, tuple(ks), tuple(lens)).end_pose()
    return x - y / math.tan(h)


def turn(x: float, y: float, h: float, angle: float, tangent: float) -> Path:
    """A symmetric smooth turn by `angle` whose tangent lines meet `tangent` metres ahead."""
    scale = tangent / turn_tangent_length(angle)
    ks, lens = _unit_turn(angle)
    return Path(x, y, h, tuple(float(k) / scale for k in ks), tuple(float(v) * scale for v in lens))


def curve_with_peak(x: float, y: float, h: float, angle: float, radius: float) -> Path:
    """A smooth turn by `angle` whose tightest curvature is 1/radius."""
    ks, lens = _unit_turn(abs(angle))
    scale = float(np.max(ks)) * radius
    sign = 1.0 if angle > 0 else -1.0
    return Path(x, y, h, tuple(sign * float(k) / scale for k in ks), tuple(float(v) * scale for v in lens))


def connect(a: tuple[float, float, float], b: tuple[float, float, float]) -> Path:
    """Lane connector from pose a to pose b: straight if aligned, else straight + smooth turn + straight."""
    ax, ay, ah = a
    bx, by, bh = b
    d = float(wrap_angle(bh - ah))
    if abs(d) < 1e-6:
        return straight(ax, ay, ah, math.hypot(bx - ax, by - ay))
    # intersection V of the two heading lines: a + t*ua = b - r*ub
    ua = np.array([math.cos(ah), math.sin(ah)])
    ub = np.array([math.cos(bh), math.sin(bh)])
    t, r = np.linalg.solve(np.stack([ua, ub], axis=1), np.array([bx - ax, by - ay]))
    tangent = min(t, r)
    if tangent <= 0.5:
        raise ValueError("connector poses do not allow a forward turn")
    parts = []
    if t - tangent > 1e-6:
        parts.append(straight(ax, ay, ah, t - tangent))
    sx, sy, sh = parts[-1].end_pose() if parts else (ax, ay, ah)
    parts.append(turn(sx, sy, sh, d, tangent))
    if r - tangent > 1e-6:
        ex, ey, eh = parts[-1].end_pose()
        parts.append(straight(ex, ey, eh, r - tangent))
    return concat(*parts)


def box_corners(x, y, h, length, width) -> np.ndarray:
    """(..., 4, 2) corners of oriented rectangles (front-left, front-right, rear-right, rear-left)."""
    x, y, h = np.asarray(x, float), np.asarray(y, float), np.asarray(h, float)
    c, s = np.cos(h)[..., None], np.sin(h)[..., None]
    lx = np.array([0.5, 0.5, -0.5, -0.5]) * np.asarray(length, float)[..., None]
    ly = np.array([0.5, -0.5, -0.5, 0.5]) * np.asarray(width, float)[..., None]
    return np.stack([x[..., None] + c * lx - s * ly, y[..., None] + s * lx + c * ly], axis=-1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test for convex quads a, b of shape (..., 4, 2): True where they overlap."""
    overlap = np.ones(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), dtype=bool)
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=-2) - poly
        normals = np.stack([-edges[..., 1], edges[..., 0]], axis=-1)  # (..., 4, 2)
        pa = np.einsum("...ij,...kj->...ik", normals, a)  # (..., 4 axes, 4 pts)
        pb = np.einsum("...ij,...kj->...ik", normals, b)
        sep = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
        overlap &= ~sep.any(-1)
    return overlap


def yaw_quaternion(h: float) -> list[float]:
    return [round(math.cos(h / 2), 8), 0.0, 0.0, round(math.sin(h / 2), 8)]


def ypr_quaternion(yaw: float, pitch: float, roll: float) -> list[float]:
    """[w, x, y, z] of yaw about z, then pitch about the new y, then roll about the new x (the body's x axis keeps
    heading `yaw` in the ground plane: the devkit's `quaternion_yaw` returns it)."""
    if pitch == 0.0 and roll == 0.0:
        return yaw_quaternion(yaw)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    return [round(v, 8) for v in (cy * cp * cr + sy * sp * sr, cy * cp * sr - sy * sp * cr,
                                  cy * sp * cr + sy * cp * sr, sy * cp * cr - cy * sp * sr)]
