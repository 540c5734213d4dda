"""Procedural road layouts of one scene, in the scene's local frame (metres, x east, y north).

Kinds: a straight road, a curved road, a four-way and a three-way junction. Traffic keeps right.
Every lane is a `Path` (see geometry.py); the drivable area is the union of the carriageways, the
junction squares and the shoulders, so anything that follows a lane with its box stays inside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.prepared import prep

from reworld.data.synth.geometry import Path, concat, connect, curve_with_peak, straight, wrap_angle
from reworld.data.synth.params import SynthParams

# labels of the top-down ground texture
GRASS, SIDEWALK, ASPHALT, WHITE, YELLOW = 0, 1, 2, 3, 4

ARM_ANGLES = {"E": 0.0, "N": math.pi / 2, "W": math.pi, "S": -math.pi / 2}


@dataclass
class Lane:
    id: str
    path: Path
    connector: bool
    next: list[str] = field(default_factory=list)
    prev: list[str] = field(default_factory=list)


@dataclass
class Road:
    """A carriageway: `fwd` lanes drive along `ref`, `bwd` lanes against it (index 0 innermost)."""

    name: str
    ref: Path
    fwd: list[str]
    bwd: list[str]
    half_width: float  # [m] lanes + shoulder, each side of ref
    stop_end: bool  # True where `bwd` lanes end at a junction (arms), False for open roads


@dataclass(frozen=True)
class Prop:
    kind: str  # building | tree | pole
    x: float
    y: float
    yaw: float
    length: float
    width: float
    height: float
    colour: tuple[float, float, float]


@dataclass
class Layout:
    kind: str  # straight | curve | junction4 | junction3
    command: str  # left | straight | right
    lanes: dict[str, Lane]
    roads: list[Road]
    drivable: BaseGeometry
    sidewalks: list[Polygon]
    markings: list[tuple[np.ndarray, int]]  # ground polygons (M, 2) with a texture label
    crosswalks: list[Polygon]
    props: list[Prop]
    ego_route: list[str]
    ego_start: float  # [m] along the route
    junction_box: tuple[float, float] | None = None  # (hx, hy) half sizes of the junction square


def route_path(layout: Layout, lane_ids: list[str]) -> Path:
    return concat(*[layout.lanes[i].path for i in lane_ids])


def _strip(ref: Path, d0: float, d1: float, step: float = 2.0) -> np.ndarray:
    """Polygon between the parallels at lateral offsets d0 < d1 of ref."""
    a = ref.offset(d0).sample(step)[:, :2]
    b = ref.offset(d1).sample(step)[:, :2]
    return np.concatenate([a, b[::-1]], axis=0)


def _dashes(ref: Path, d: float, s0: float, s1: float, dash: float, gap: float, width: float):
    out = []
    off = ref.offset(d)
    scale = off.length / max(ref.length, 1e-9)
    s = s0
    while s + dash <= s1:
        sub = off.subpath(s * scale, (s + dash) * scale)
        out.append((_strip(sub, -width / 2, width / 2, step=dash / 2), WHITE))
        s += dash + gap
    return out


def _road_markings(ref: Path, n: int, p: SynthParams, s0: float = 0.0, s1: float | None = None):
    s1 = ref.length if s1 is None else s1
    sub = ref.subpath(s0, s1)
    marks = [(_strip(sub, -0.22, -0.08), YELLOW), (_strip(sub, 0.08, 0.22), YELLOW)]
    for side in (-1, 1):
        marks.append((_strip(sub, side * n * p.lane_width - 0.08, side * n * p.lane_width + 0.08), WHITE))
        for i in range(1, n):
            marks += _dashes(sub, side * i * p.lane_width, 1.0, sub.length, 3.0, 6.0, 0.14)
    return marks


def _add_road(lanes: dict, name: str, ref: Path, n: int, p: SynthParams, stop_end: bool) -> Road:
    fwd, bwd = [], []
    back = ref.reversed()
    for i in range(n):
        fid, bid = f"{name}o{i}", f"{name}i{i}"
        lanes[fid] = Lane(fid, ref.offset(-(i + 0.5) * p.lane_width), False)
        lanes[bid] = Lane(bid, back.offset(-(i + 0.5) * p.lane_width), False)
        fwd.append(fid)
        bwd.append(bid)
    return Road(name, ref, fwd, bwd, n * p.lane_width + p.shoulder_width, stop_end)


def _sidewalks(road: Road, p: SynthParams) -> list[Polygon]:
    w = road.half_width
    return [Polygon(_strip(road.ref, w, w + p.sidewalk_width)),
            Polygon(_strip(road.ref, -w - p.sidewalk_width, -w))]


def build_road(rng: np.random.Generator, p: SynthParams, curved: bool) -> Layout:
    n = int(rng.choice([1, 2, 2, 3]))
    if curved:
        lead = 130.0 + float(rng.uniform(0.0, 50.0))
        angle = math.radians(float(rng.uniform(35.0, 85.0))) * float(rng.choice([-1.0, 1.0]))
        radius = float(rng.uniform(55.0, 120.0))
        a = straight(-330.0, 0.0, 0.0, lead)
        c = curve_with_peak(*a.end_pose(), angle, radius)
        x, y, h = c.end_pose()
        tail = 660.0 - lead - c.length
        # keep the road inside this scene's square of the map
        for _ in range(40):
            ex, ey = x + tail * math.cos(h), y + tail * math.sin(h)
            if max(abs(ex), abs(ey)) < 470.0:
                break
            tail -= 10.0
        ref = concat(a, c, straight(x, y, h, tail))
    else:
        ref = straight(-330.0, 0.0, 0.0, 660.0)
    lanes: dict[str, Lane] = {}
    road = _add_road(lanes, "R", ref, n, p, stop_end=False)
    drivable = Polygon(_strip(ref, -road.half_width, road.half_width)).buffer(0)
    lane_idx = int(rng.integers(0, n))
    layout = Layout(
        kind="curve" if curved else "straight", command="straight", lanes=lanes, roads=[road],
        drivable=drivable, sidewalks=_sidewalks(road, p), markings=_road_markings(ref, n, p),
        crosswalks=[], props=[], ego_route=[road.fwd[lane_idx]],
        ego_start=110.0 + float(rng.uniform(0.0, 30.0)))
    if p.median_islands and not curved:
        # a kerbed median island on the centre line, which the ego passes about 7 s in: a hole in the drivable
        # area, as traffic islands and medians are on real maps (no random draw: the rest of the scene is unchanged)
        s0 = layout.ego_start + 70.0
        island = Polygon(_strip(ref.subpath(s0, s0 + p.island_length), -p.island_width / 2, p.island_width / 2, 1.0))
        layout.drivable = layout.drivable.difference(island)
    layout.props = _props(rng, layout, p)
    return layout


def _missing_arm(rng: np.random.Generator, command: str) -> str:
    options = {"left": ["E", "S"], "right": ["E", "N"], "straight": ["N", "S"]}[command]
    return str(rng.choice(options))


def build_junction(rng: np.random.Generator, p: SynthParams, four_way: bool, command: str) -> Layout:
    n_main = int(rng.choice([1, 2, 2, 3]))
    n_cross = int(rng.choice([1, 2]))
    w_main = n_main * p.lane_width + p.shoulder_width
    w_cross = n_cross * p.lane_width + p.shoulder_width
    hx, hy = w_cross + p.junction_margin, w_main + p.junction_margin
    arms = {"E": (n_main, hx), "W": (n_main, hx), "N": (n_cross, hy), "S": (n_cross, hy)}
    if not four_way:
        del arms[_missing_arm(rng, command)]
    lanes: dict[str, Lane] = {}
    roads, marks, walks, crosswalks = [], [], [], []
    surfaces = [box(-hx, -hy, hx, hy)]
    for name, (n, b) in arms.items():
        phi = ARM_ANGLES[name]
        ref = straight(b * math.cos(phi), b * math.sin(phi), phi, p.arm_length - b)
        road = _add_road(lanes, name, ref, n, p, stop_end=True)
        roads.append(road)
        surfaces.append(Polygon(_strip(ref, -road.half_width, road.half_width)))
        marks += _road_markings(ref, n, p, s0=5.0)
        marks.append((_strip(ref.subpath(4.6, 5.0), 0.0, n * p.lane_width), WHITE))  # stop line
        walks += _sidewalks(road, p)
        for k in range(int(2 * n * p.lane_width / 1.0)):  # zebra crossing 1 to 4 m into the arm
            d = -n * p.lane_width + 0.25 + k * 1.0
            marks.append((_strip(ref.subpath(1.0, 4.0), d, d + 0.5), WHITE))
        crosswalks.append(Polygon(_strip(ref.subpath(1.0, 4.0), -n * p.lane_width, n * p.lane_width)))
    sw = p.sidewalk_width
    walks.append(box(-hx - sw, -hy - sw, hx + sw, hy + sw).difference(box(-hx, -hy, hx, hy)))
    # connectors: straight i->i, left 0->0, right last->last
    for a, (na, _) in arms.items():
        for b, (nb, _) in arms.items():
            if a == b:
                continue
            delta = float(wrap_angle(ARM_ANGLES[b] - (ARM_ANGLES[a] + math.pi)))
            if abs(delta) < 0.1:
                pairs = [(i, i) for i in range(min(na, nb))]
            elif delta > 0:
                pairs = [(0, 0)]
            else:
                pairs = [(na - 1, nb - 1)]
            for i, j in pairs:
                src, dst = lanes[f"{a}i{i}"], lanes[f"{b}o{j}"]
                cid = f"{a}{i}{b}{j}"
                lanes[cid] = Lane(cid, connect(src.path.end_pose(), (dst.path.x0, dst.path.y0, dst.path.h0)), True,
                                  next=[dst.id], prev=[src.id])
                src.next.append(cid)
                dst.prev.append(cid)
    target = {"left": "N", "straight": "E", "right": "S"}[command]
    n_w = arms["W"][0]
    lane_i = {"left": 0, "right": n_w - 1}.get(command, int(rng.integers(0, n_w)))
    conn = next(c for c in lanes[f"Wi{lane_i}"].next if c[2] == target)
    route = [f"Wi{lane_i}", conn, lanes[conn].next[0]]
    start = lanes[route[0]].path.length - float(rng.uniform(35.0, 70.0))
    layout = Layout(
        kind="junction4" if four_way else "junction3", command=command, lanes=lanes, roads=roads,
        drivable=unary_union(surfaces).buffer(0), sidewalks=walks, markings=marks, crosswalks=crosswalks,
        props=[], ego_route=route, ego_start=start, junction_box=(hx, hy))
    layout.props = _props(rng, layout, p)
    return layout


_BUILDING_COLOURS = [(0.62, 0.55, 0.48), (0.7, 0.68, 0.62), (0.55, 0.36, 0.3), (0.45, 0.47, 0.5),
                     (0.78, 0.74, 0.66), (0.5, 0.42, 0.36), (0.6, 0.62, 0.66)]


def _props(rng: np.random.Generator, layout: Layout, p: SynthParams) -> list[Prop]:
    """Buildings, trees and street-light poles beside every road, never on a road or sidewalk."""
    blocked = prep(unary_union([layout.drivable.buffer(0.8)] + layout.sidewalks))
    taken: list[Polygon] = []
    props: list[Prop] = []
    for road in layout.roads:
        for side in (-1.0, 1.0):
            # buildings
            s = float(rng.uniform(0.0, 15.0))
            while s < road.ref.length:
                length, depth = float(rng.uniform(10.0, 30.0)), float(rng.uniform(10.0, 22.0))
                setback = road.half_width + p.sidewalk_width + float(rng.uniform(4.0, 16.0))
                _place(props, taken, blocked, road.ref, s + length / 2, side * (setback + depth / 2), "building",
                       length, depth, float(rng.uniform(6.0, 28.0)),
                       _BUILDING_COLOURS[int(rng.integers(0, len(_BUILDING_COLOURS)))])
                s += length + float(rng.uniform(3.0, 30.0))
            # trees
            s = float(rng.uniform(0.0, 10.0))
            while s < road.ref.length:
                size = float(rng.uniform(2.5, 5.0))
                green = (0.18 + float(rng.uniform(0, 0.1)), 0.38 + float(rng.uniform(0, 0.15)), 0.14)
                _place(props, taken, blocked, road.ref, s, side * (road.half_width + p.sidewalk_width + 1.8),
                       "tree", size, size, size * float(rng.uniform(1.6, 2.4)), green)
                s += float(rng.uniform(9.0, 30.0))
            # street-light poles on the sidewalk's outer edge
            s = float(rng.uniform(0.0, 30.0))
            while s < road.ref.length:
                _place(props, taken, None, road.ref, s, side * (road.half_width + p.sidewalk_width - 0.3), "pole",
                       0.25, 0.25, 7.0, (0.35, 0.36, 0.38))
                s += 35.0
    return props


def _place(props, taken, blocked, ref: Path, s: float, d: float, kind: str, length: float, width: float,
           height: float, colour) -> None:
    if s > ref.length:
        return
    x, y, h = ref.poses_at(np.array([s]))[0]
    x, y = x - d * math.sin(h), y + d * math.cos(h)
    c, sn = math.cos(h), math.sin(h)
    pts = [(x + c * a - sn * b, y + sn * a + c * b) for a, b in
           ((length / 2, width / 2), (length / 2, -width / 2), (-length / 2, -width / 2), (-length / 2, width / 2))]
    foot = Polygon(pts)
    if blocked is not None and blocked.intersects(foot):
        return
    if kind != "pole" and any(t.intersects(foot) for t in taken):
        return
    if kind != "pole":
        taken.append(foot)
    props.append(Prop(kind, float(x), float(y), float(h), length, width, height, tuple(colour)))
