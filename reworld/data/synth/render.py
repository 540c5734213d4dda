"""A pinhole CAM_FRONT for the synthetic world.

The ground is ray-cast per pixel into a top-down label texture of the scene (road, markings, sidewalk,
grass), with coarse and fine noise and distance haze; vehicles, pedestrians, buildings, trees and poles
are shaded boxes (plus flat decals: windows, lights, shadows) drawn far to near with PIL, with faces
clipped at the near plane. Everything is drawn at `supersample` times the size and box-filtered down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from reworld.data.synth.layout import ASPHALT, GRASS, SIDEWALK, Layout
from reworld.data.synth.params import SynthParams
from reworld.data.synth.traffic import Track

NEAR = 0.3  # [m] near plane
# corner order of a box: bottom (z0) then top (z1), each (+x+y, +x-y, -x-y, -x+y) in the object frame
_FACES = np.array([[0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7], [4, 5, 6, 7], [0, 3, 2, 1]])
_FACE_NORMALS = np.array([[1, 0, 0], [0, -1, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]], float)


@dataclass(frozen=True)
class Camera:
    width: int  # [px]
    height: int  # [px]
    fx: float
    fy: float
    cx: float
    cy: float
    forward: float  # [m] ahead of the ego pose
    height_m: float  # [m] above the ground

    def intrinsic(self) -> list[list[float]]:
        return [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]


def make_camera(p: SynthParams, image_size: tuple[int, int]) -> Camera:
    h, w = image_size
    sx, sy = w / p.cam_ref_width, h / p.cam_ref_height
    return Camera(w, h, p.cam_fx * sx, p.cam_fy * sy, p.cam_cx * sx, p.cam_cy * sy, p.cam_forward, p.cam_height)


@dataclass(frozen=True)
class Lighting:
    brightness: float
    sun: np.ndarray  # (3,) unit vector towards the sun
    zenith: np.ndarray  # (3,) sky colours in [0, 1]
    horizon: np.ndarray
    palette: np.ndarray  # (5, 3) ground colours by texture label
    haze: np.ndarray


def random_lighting(rng: np.random.Generator) -> Lighting:
    elev = float(rng.uniform(0.35, 1.2))
    azim = float(rng.uniform(-math.pi, math.pi))
    sun = np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
    overcast = float(rng.uniform(0.0, 1.0))
    zenith = (1 - overcast) * np.array([0.25, 0.45, 0.8]) + overcast * np.array([0.62, 0.65, 0.7])
    horizon = (1 - overcast) * np.array([0.72, 0.8, 0.9]) + overcast * np.array([0.8, 0.8, 0.8])
    warm = float(rng.uniform(0.0, 0.12))
    horizon = np.clip(horizon + np.array([warm, warm * 0.4, -warm]), 0, 1)
    dry = float(rng.uniform(0.0, 1.0))
    grass = (1 - dry) * np.array([0.26, 0.42, 0.16]) + dry * np.array([0.5, 0.5, 0.28])
    asphalt = np.full(3, float(rng.uniform(0.3, 0.42))) + np.array([0.0, 0.0, 0.015])
    palette = np.stack([grass, np.array([0.66, 0.64, 0.6]), asphalt, np.array([0.92, 0.92, 0.9]),
                        np.array([0.9, 0.72, 0.15])])
    return Lighting(float(rng.uniform(0.75, 1.15)), sun, zenith, horizon, palette, horizon * 0.95)


class GroundTexture:
    """Top-down labels of the scene at `res` metres per pixel, plus two noise layers."""

    def __init__(self, layout: Layout, centre_path: np.ndarray, p: SynthParams, rng: np.random.Generator):
        lo = centre_path.min(axis=0) - p.ground_margin
        hi = centre_path.max(axis=0) + p.ground_margin
        self.res = p.ground_res
        self.origin = lo
        w, h = (np.ceil((hi - lo) / self.res)).astype(int)
        img = Image.new("L", (int(w), int(h)), GRASS)
        draw = ImageDraw.Draw(img)

        def poly(coords, label):
            pts = (np.asarray(coords) - lo) / self.res
            draw.polygon([tuple(q) for q in pts.tolist()], fill=int(label))

        for walk in layout.sidewalks:
            for g in getattr(walk, "geoms", [walk]):
                poly(np.asarray(g.exterior.coords), SIDEWALK)
                for hole in g.interiors:
                    poly(np.asarray(hole.coords), GRASS)
        for g in getattr(layout.drivable, "geoms", [layout.drivable]):
            poly(np.asarray(g.exterior.coords), ASPHALT)
        for coords, label in layout.markings:
            poly(coords, label)
        for g in getattr(layout.drivable, "geoms", [layout.drivable]):  # islands and medians: kerbed, not drivable
            for hole in g.interiors:
                poly(np.asarray(hole.coords), SIDEWALK)
        self.labels = np.asarray(img, dtype=np.uint8)
        self.shape = np.array(self.labels.shape[::-1])  # (w, h)
        coarse = rng.normal(0.0, 1.0, size=(int(h * self.res / 4) + 2, int(w * self.res / 4) + 2))
        coarse = Image.fromarray(coarse.astype(np.float32)).resize(
            (coarse.shape[1] * 4, coarse.shape[0] * 4), Image.BILINEAR)
        self.coarse = np.asarray(coarse, dtype=np.float32) * 0.07  # 1 m cells
        self.fine = rng.normal(0.0, 0.06, size=(128, 128)).astype(np.float32)  # 0.25 m cells, tiled
        self.strength = np.array([1.0, 0.35, 0.4, 0.1, 0.1], dtype=np.float32)

    def colours(self, wx: np.ndarray, wy: np.ndarray, palette: np.ndarray) -> np.ndarray:
        ix = ((wx - self.origin[0]) / self.res).astype(np.int64)
        iy = ((wy - self.origin[1]) / self.res).astype(np.int64)
        inside = (ix >= 0) & (iy >= 0) & (ix < self.shape[0]) & (iy < self.shape[1])
        lab = np.full(wx.shape, GRASS, dtype=np.uint8)
        lab[inside] = self.labels[iy[inside], ix[inside]]
        cx = np.clip(((wx - self.origin[0])).astype(np.int64), 0, self.coarse.shape[1] - 1)
        cy = np.clip(((wy - self.origin[1])).astype(np.int64), 0, self.coarse.shape[0] - 1)
        fx = (np.floor(wx * 4.0).astype(np.int64)) & 127
        fy = (np.floor(wy * 4.0).astype(np.int64)) & 127
        noise = (self.coarse[cy, cx] + self.fine[fy, fx]) * self.strength[lab]
        return palette[lab] * (1.0 + noise)[:, None]


class SceneRenderer:
    """Renders frame t of one scene from the ego's camera."""

    def __init__(self, layout: Layout, tracks: list[Track], cam: Camera, light: Lighting, p: SynthParams,
                 rng: np.random.Generator):
        self.tracks, self.cam, self.light, self.p = tracks, cam, light, p
        self.ss = p.supersample
        self.ground = GroundTexture(layout, tracks[0].xy, p, rng)
        w, h = cam.width * self.ss, cam.height * self.ss
        self.size = (w, h)
        self.fx, self.fy = cam.fx * self.ss, cam.fy * self.ss
        self.cx, self.cy = (cam.cx + 0.5) * self.ss - 0.5, (cam.cy + 0.5) * self.ss - 0.5
        # fixed ground rays: the camera neither pitches nor rolls
        self.horizon_row = int(math.floor(self.cy)) + 1
        v, u = np.mgrid[self.horizon_row:h, 0:w].astype(np.float64)
        t = cam.height_m / ((v - self.cy) / self.fy)
        self.g_fwd = (t + cam.forward).ravel()
        self.g_left = (-t * (u - self.cx) / self.fx).ravel()
        self.g_dist = np.hypot(t, t * (u - self.cx) / self.fx).ravel()
        self.fog = (1.0 - np.exp(-self.g_dist / p.fog_distance))[:, None]
        rows = np.arange(self.horizon_row)[:, None] / max(self.horizon_row - 1, 1)
        sky = light.zenith[None] + (light.horizon - light.zenith)[None] * rows ** 1.8
        self.sky = np.repeat(sky[:, None, :], w, axis=1)
        static = [_faces(_prop_parts(pr), pr.x, pr.y, pr.yaw) for pr in layout.props]
        self.static_xy = np.array([[pr.x, pr.y] for pr in layout.props]).reshape(-1, 2)
        self.static_obj = np.concatenate([np.full(len(f[0]), i) for i, f in enumerate(static)] + [np.zeros(0, int)])
        self.static = tuple(np.concatenate([f[k] for f in static] + [np.zeros((0,) + shp)])
                            for k, shp in enumerate([(4, 3), (3,), (3,), ()]))
        self.agents = [_faces(_agent_parts(tr), 0.0, 0.0, 0.0) for tr in tracks[1:]]

    def render(self, t: int) -> Image.Image:
        ego = self.tracks[0]
        ex, ey = ego.xy[t]
        h = float(ego.yaw[t])
        c, s = math.cos(h), math.sin(h)
        w, hh = self.size
        wx = ex + c * self.g_fwd - s * self.g_left
        wy = ey + s * self.g_fwd + c * self.g_left
        ground = self.ground.colours(wx, wy, self.light.palette)
        ground = ground * (1 - self.fog) + self.light.haze[None] * self.fog
        img = np.empty((hh, w, 3), dtype=np.float32)
        img[: self.horizon_row] = self.sky
        img[self.horizon_row:] = ground.reshape(hh - self.horizon_row, w, 3) * self.light.brightness
        canvas = Image.fromarray(np.clip(img * 255.0, 0, 255).astype(np.uint8))
        cam_pos = np.array([ex + c * self.cam.forward, ey + s * self.cam.forward, self.cam.height_m])
        self._draw_objects(ImageDraw.Draw(canvas), t, cam_pos, c, s)
        if self.ss > 1:
            canvas = canvas.reduce(self.ss)
        return canvas

    # ------------------------------------------------------------------------------------------- objects
    def _draw_objects(self, draw: ImageDraw.ImageDraw, t: int, cam: np.ndarray, c: float, s: float) -> None:
        """All faces of the objects in range, shaded and sorted far to near, drawn in one pass."""
        rel = self.static_xy - cam[:2]
        dist = np.hypot(rel[:, 0], rel[:, 1])
        keep = (dist < self.p.draw_distance) & (rel[:, 0] * c + rel[:, 1] * s > -30.0)
        fmask = keep[self.static_obj]
        pts, nrm, col, order = (a[fmask] for a in self.static)
        fdist = dist[self.static_obj[fmask]]
        parts = [(pts, nrm, col, order, fdist)]
        for tr, (lp, ln, lc, lo) in zip(self.tracks[1:], self.agents):
            x, y = tr.xy[t]
            d = math.hypot(x - cam[0], y - cam[1])
            if d < self.p.draw_distance and (x - cam[0]) * c + (y - cam[1]) * s > -15.0:
                rot = _rot(float(tr.yaw[t]))
                parts.append((lp @ rot.T + np.array([x, y, 0.0]), ln @ rot.T, lc, lo, np.full(len(lo), d)))
        pts, nrm, col, order, fdist = (np.concatenate(k) for k in zip(*parts))
        visible = np.einsum("fk,fk->f", nrm, cam[None] - pts.mean(axis=1)) > 0.0
        pts, nrm, col, order, fdist = pts[visible], nrm[visible], col[visible], order[visible], fdist[visible]
        pc = self._to_cam(pts, cam, c, s)  # (F, 4, 3)
        z = pc[..., 2]
        front = (z >= NEAR).any(axis=1)
        pts, nrm, col, order, fdist, pc, z = (a[front] for a in (pts, nrm, col, order, fdist, pc, z))
        light = self.light
        shade = 0.55 + 0.5 * np.maximum(nrm @ light.sun, 0.0) + 0.1 * nrm[:, 2]
        fog = (1.0 - np.exp(-fdist / self.p.fog_distance))[:, None]
        rgb = ((col * shade[:, None]) * (1 - fog) + light.haze[None] * fog) * light.brightness
        fills = np.clip(rgb * 255.0, 0, 255).astype(np.int64).tolist()
        zs = np.maximum(z, NEAR)
        uv = np.stack([self.fx * pc[..., 0] / zs + self.cx + 0.5, self.fy * pc[..., 1] / zs + self.cy + 0.5], -1)
        clipped = (z < NEAR).any(axis=1)
        w, h = self.size
        on_screen = ((uv[..., 0].max(1) >= 0) & (uv[..., 0].min(1) <= w) & (uv[..., 1].max(1) >= 0)
                     & (uv[..., 1].min(1) <= h)) | clipped
        uv_list = uv.tolist()
        for i in np.lexsort((order, -fdist)):
            if not on_screen[i]:
                continue
            if clipped[i]:
                poly = _clip_near(pc[i])
                if poly is None:
                    continue
                quad = np.stack([self.fx * poly[:, 0] / poly[:, 2] + self.cx + 0.5,
                                 self.fy * poly[:, 1] / poly[:, 2] + self.cy + 0.5], axis=1).tolist()
            else:
                quad = uv_list[i]
            draw.polygon([tuple(q) for q in quad], fill=tuple(fills[i]))

    def _to_cam(self, pts: np.ndarray, cam: np.ndarray, c: float, s: float) -> np.ndarray:
        rel = pts - cam
        fwd = rel[..., 0] * c + rel[..., 1] * s
        left = -rel[..., 0] * s + rel[..., 1] * c
        return np.stack([-left, -rel[..., 2], fwd], axis=-1)  # camera x right, y down, z forward


def _rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _faces(parts: list, x: float, y: float, yaw: float):
    """Flatten parts (object frame) into face arrays placed at pose (x, y, yaw):
    corners (F, 4, 3), normals (F, 3), colours (F, 3), draw order within the object (F,)."""
    pts, nrm, col, order = [], [], [], []
    for k, (kind, p, normals, colours) in enumerate(parts):
        faces = _FACES if kind == "box" else np.array([[0, 1, 2, 3]])
        for face, n, cl in zip(faces, normals, colours):
            if cl is None:
                continue
            pts.append(p[face])
            nrm.append(n)
            col.append(cl)
            order.append(k)
    rot = _rot(yaw)
    pts = np.array(pts, dtype=np.float64) @ rot.T + np.array([x, y, 0.0])
    return pts, np.array(nrm, dtype=np.float64) @ rot.T, np.array(col, dtype=np.float64), np.array(order, float)


def _clip_near(poly: np.ndarray):
    z = poly[:, 2]
    if (z >= NEAR).all():
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            k = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + k * (b - a))
    return np.array(out) if len(out) >= 3 else None


# ----------------------------------------------------------------------------------------------- models

def _box(x, y, yaw, cx, cy, length, width, z0, z1, colour, top=None, sides=True):
    """A box part: (x, y, yaw) the object pose, (cx, cy) the box centre in the object frame."""
    c, s = math.cos(yaw), math.sin(yaw)
    lx = np.array([1, 1, -1, -1]) * length / 2 + cx
    ly = np.array([1, -1, -1, 1]) * width / 2 + cy
    gx, gy = x + c * lx - s * ly, y + s * lx + c * ly
    pts = np.concatenate([np.stack([gx, gy, np.full(4, z0)], 1), np.stack([gx, gy, np.full(4, z1)], 1)])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    normals = _FACE_NORMALS @ rot.T
    cols = [colour if sides else None] * 4 + [top if top is not None else colour, None]
    return ("box", pts, normals, cols)


def _quad(x, y, yaw, local: np.ndarray, normal, colour):
    """A flat decal: local (4, 3) corners in the object frame, normal in the object frame."""
    c, s = math.cos(yaw), math.sin(yaw)
    gx = x + c * local[:, 0] - s * local[:, 1]
    gy = y + s * local[:, 0] + c * local[:, 1]
    n = np.array([c * normal[0] - s * normal[1], s * normal[0] + c * normal[1], normal[2]])
    return ("quad", np.stack([gx, gy, local[:, 2]], 1), [n], [colour])


def _face_decal(x, y, yaw, face_x, y0, y1, z0, z1, colour, sign=1.0):
    """Rectangle on the plane x = face_x (front if sign > 0, rear if < 0) of an object."""
    local = np.array([[face_x, y0, z0], [face_x, y1, z0], [face_x, y1, z1], [face_x, y0, z1]])
    return _quad(x, y, yaw, local, (sign, 0.0, 0.0), colour)


def _side_decal(x, y, yaw, side_y, x0, x1, z0, z1, colour):
    local = np.array([[x0, side_y, z0], [x1, side_y, z0], [x1, side_y, z1], [x0, side_y, z1]])
    return _quad(x, y, yaw, local, (0.0, math.copysign(1.0, side_y), 0.0), colour)


GLASS = (0.12, 0.15, 0.19)
TYRE = (0.08, 0.08, 0.09)


def _shadow(x, y, yaw, length, width):
    local = np.array([[length / 2, width / 2, 0.02], [length / 2, -width / 2, 0.02],
                      [-length / 2, -width / 2, 0.02], [-length / 2, width / 2, 0.02]])
    return _quad(x, y, yaw, local * np.array([1.08, 1.15, 1.0]), (0.0, 0.0, 1.0), (0.06, 0.06, 0.07))


def _agent_parts(tr: Track) -> list:
    """Parts of a road user in its own frame (x forward, y left, z up)."""
    x = y = yaw = 0.0
    L, W, H, col = tr.length, tr.width, tr.height, tr.colour
    if tr.kind == "pedestrian":
        return [_box(x, y, yaw, 0, 0, 0.3, 0.45, 0.0, 0.47 * H, (0.15, 0.15, 0.2)),
                _box(x, y, yaw, 0, 0, 0.32, 0.55, 0.47 * H, 0.86 * H, col),
                _box(x, y, yaw, 0, 0, 0.22, 0.22, 0.87 * H, H, (0.75, 0.58, 0.45))]
    parts = [_shadow(x, y, yaw, L, W), _box(x, y, yaw, 0, 0, L * 0.86, W - 0.1, 0.0, 0.32, TYRE)]
    if tr.kind in ("car", "suv"):
        belt = 0.58 * H
        parts += [_box(x, y, yaw, 0, 0, L, W, 0.25, belt, col),
                  _box(x, y, yaw, -0.06 * L, 0, 0.52 * L, W - 0.16, belt, H, GLASS, top=col)]
        lz0, lz1 = belt - 0.2, belt - 0.05
    elif tr.kind == "truck":
        cab = 2.1
        parts += [_box(x, y, yaw, L / 2 - cab / 2, 0, cab, W, 0.3, 0.72 * H, col),
                  _box(x, y, yaw, L / 2 - cab / 2 + 0.1, 0, cab - 0.5, W - 0.1, 0.72 * H, 0.78 * H, GLASS, top=col),
                  _box(x, y, yaw, -cab / 2 - 0.1, 0, L - cab - 0.2, W, 0.3, H, (0.86, 0.86, 0.84))]
        parts.append(_face_decal(x, y, yaw, L / 2 + 0.01, -W / 2 + 0.15, W / 2 - 0.15, 0.5 * H, 0.7 * H, GLASS))
        lz0, lz1 = 0.45, 0.62
    else:  # bus
        parts += [_box(x, y, yaw, 0, 0, L, W, 0.3, H, col)]
        for side in (-1.0, 1.0):
            parts.append(_side_decal(x, y, yaw, side * (W / 2 + 0.01), -L / 2 + 0.8, L / 2 - 1.2, 0.55 * H,
                                     0.85 * H, GLASS))
        parts.append(_face_decal(x, y, yaw, L / 2 + 0.01, -W / 2 + 0.1, W / 2 - 0.1, 0.4 * H, 0.88 * H, GLASS))
        lz0, lz1 = 0.5, 0.75
    for side in (-1.0, 1.0):
        y0, y1 = side * (W / 2 - 0.05), side * (W / 2 - 0.38)
        parts.append(_face_decal(x, y, yaw, -L / 2 - 0.01, y0, y1, lz0, lz1, (0.8, 0.05, 0.04), sign=-1.0))
        parts.append(_face_decal(x, y, yaw, L / 2 + 0.01, y0, y1, lz0, lz1, (0.95, 0.93, 0.8)))
    return parts


def _prop_parts(pr) -> list:
    x = y = yaw = 0.0
    if pr.kind == "tree":
        parts = [_box(x, y, yaw, 0, 0, 0.3, 0.3, 0.0, 0.4 * pr.height, (0.3, 0.22, 0.15)),
                 _box(x, y, yaw, 0, 0, pr.length, pr.width, 0.35 * pr.height, 0.85 * pr.height, pr.colour),
                 _box(x, y, yaw + math.pi / 4, 0, 0, pr.length * 0.7, pr.width * 0.7, 0.6 * pr.height, pr.height,
                      tuple(np.asarray(pr.colour) * 1.1))]
    elif pr.kind == "pole":
        parts = [_box(x, y, yaw, 0, 0, pr.length, pr.width, 0.0, pr.height, pr.colour)]
    else:
        parts = [_box(x, y, yaw, 0, 0, pr.length, pr.width, 0.0, pr.height, pr.colour)]
        floors = min(int(pr.height / 3.2), 6)
        for side in (-1.0, 1.0):
            for f in range(floors):
                z0 = 1.2 + f * 3.2
                parts.append(_side_decal(x, y, yaw, side * (pr.width / 2 + 0.02), -pr.length / 2 + 0.8,
                                         pr.length / 2 - 0.8, z0, z0 + 1.4, GLASS))
    return parts
