"""Known-answer tests of the PDM scorer and strict scene/trajectory parsing (hand-made scenes)."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from reworld.data.types import AgentTrack, Clip, Observation, Target
from reworld.planning.pdm import (
    PDMScorerConfig,
    boxes_overlap,
    reference_progress,
    score_trajectories,
    score_trajectory,
)
from reworld.planning.scene import PlanningScene, SceneFormatError, load_scene, load_trajectory

T = np.arange(1, 9) * 0.5  # pose times [s]


SPLINE = PDMScorerConfig(simulation="spline")  # the first, untracked scorer: its known answers stay pinned


def straight(v: float, accel: float = 0.0, y: float = 0.0) -> np.ndarray:
    return np.stack([v * T + 0.5 * accel * T**2, np.full(8, y), np.zeros(8)], -1)


def road_scene(agents=(), speed=10.0, expert=None) -> PlanningScene:
    """A straight road from y = -1.75 (right edge) to y = 5.25; the ego in the right lane at y = 0."""
    return PlanningScene(
        ego_speed=speed, ego_acceleration=0.0, ego_yaw_rate=0.0, ego_length=4.5, ego_width=1.9,
        command="straight",
        drivable_area=[np.array([[-30.0, -1.75], [200.0, -1.75], [200.0, 5.25], [-30.0, 5.25]])],
        centerline=np.stack([np.linspace(-30, 200, 24), np.zeros(24)], -1),
        agents=list(agents), expert=straight(speed) if expert is None else expert,
    )


def car(id_, x, y=0.0, speed=0.0, kind="vehicle"):
    rows = [[0.0, x, y, 0.0]] if speed == 0 else [[0.0, x, y, 0.0], [5.0, x + 5.0 * speed, y, 0.0]]
    return AgentTrack(id_, kind, 4.5, 1.9, np.array(rows))


# ------------------------------------------------------------------------------------- scores


def test_expert_on_free_road_scores_high():
    scene = road_scene()
    r = score_trajectory(scene, scene.expert)
    assert (r.nc, r.dac, r.ttc, r.c) == (1.0, 1.0, 1.0, 1.0)
    assert r.pdms >= 0.9
    assert r.progress_m == pytest.approx(40.0, abs=1e-6)


def test_driving_into_standing_car_is_a_collision():
    scene = road_scene([car("parked", 25.0)])
    r = score_trajectory(scene, straight(10.0))
    assert r.nc == 0.0 and r.pdms == 0.0
    assert r.collision_agent_id == "parked"
    assert 1.5 < r.collision_time_s < 2.5  # front bumper 22.75 m - 2.25 m at 10 m/s: about 2.05 s
    # stopping in time behind it is fine
    stop = np.stack([np.minimum(10 * T - 2.5 * T**2, 10.0), np.zeros(8), np.zeros(8)], -1)
    stop[T >= 2.0, 0] = 10.0
    assert score_trajectory(scene, stop).nc == 1.0


def test_static_object_collision_halves_nc_and_rear_end_is_not_at_fault():
    cone = AgentTrack("cone", "static", 0.5, 0.5, np.array([[0.0, 20.0, 0.0, 0.0]]))
    assert score_trajectory(road_scene([cone]), straight(10.0)).nc == 0.5
    # a faster car from behind runs into the ego: not the ego's fault
    chaser = car("chaser", -12.0, speed=16.0)
    r = score_trajectory(road_scene([chaser]), straight(10.0))
    assert r.nc == 1.0 and r.collision_agent_id is None
    # an agent overlapping the ego at t = 0 is ignored by the spline rules; NAVSIM ignores nothing at the start: the
    # moving ego in a stopped car is at fault
    assert score_trajectory(road_scene([car("ghost", 1.0)]), straight(10.0), SPLINE).nc == 1.0
    assert score_trajectory(road_scene([car("ghost", 1.0)]), straight(10.0)).nc == 0.0


def test_leaving_the_road_fails_dac():
    scene = road_scene()
    veer = np.stack([10 * T, -0.25 * T**2, -0.05 * T], -1)  # to y = -4 m, over the right edge at -1.75 m
    r = score_trajectory(scene, veer)
    assert r.dac == 0.0 and r.pdms == 0.0 and r.nc == 1.0
    assert 0.0 < r.off_road_time_s < 4.0
    # the same manoeuvre to the left stays on the road (left edge at 5.25 m)
    left = veer * [1, -0.5, -0.5]
    assert score_trajectory(scene, left).dac == 1.0


def test_hard_braking_is_uncomfortable():
    scene = road_scene()
    brake = np.stack([np.full(8, 2.5), np.zeros(8), np.zeros(8)], -1)  # 10 m/s to 0 within 0.5 s
    r = score_trajectory(scene, brake)
    assert r.c == 0.0 and "lon_accel" in r.comfort_violations
    # an ordinary stop (-2.5 m/s^2) is comfortable
    gentle = straight(10.0, accel=-2.5)
    assert score_trajectory(scene, gentle).c == 1.0


def test_agents_are_there_from_their_first_to_their_last_annotation_as_in_navsim():
    """NAVSIM's observation: a track is interpolated between its first and last annotation and absent outside them;
    a track annotated once is there, standing, at every step; PDM-Closed plans only around the agents of t = 0."""
    from reworld.planning.pdm_closed import forecast_scene

    def standing(id_, x, times):
        return AgentTrack(id_, "vehicle", 4.5, 1.9, np.array([[t, x, 0.0, 0.0] for t in times]))

    # a car 25 m ahead that is gone after 1 s (it turned off): nothing left to hit at 2 s
    gone = score_trajectory(road_scene([standing("gone", 25.0, [0.0, 1.0])]), straight(10.0))
    assert (gone.nc, gone.ttc) == (1.0, 1.0)
    # the same car annotated to 4 s is hit when the front bumper reaches it: (25 - 2.25 - 2.25) / 10 = 2.05 s
    stays = score_trajectory(road_scene([standing("stays", 25.0, [0.0, 4.0])]), straight(10.0))
    assert stays.nc == 0.0 and 2.0 <= stays.collision_time_s <= 2.2
    # a car that enters at 3 s 30 m ahead, where the ego already is: hit at its first annotation
    enters = road_scene([standing("enters", 30.0, [3.0, 4.0])])
    r = score_trajectory(enters, straight(10.0))
    assert r.nc == 0.0 and r.collision_time_s == pytest.approx(3.0)
    assert forecast_scene(enters).agents == []  # not in the frame PDM-Closed plans from
    # annotated once, at 3 s: NAVSIM keeps it at every step, so the ego reaches it at (30 - 4.5) / 10 = 2.55 s
    once = score_trajectory(road_scene([standing("once", 30.0, [3.0])]), straight(10.0))
    assert once.nc == 0.0 and 2.5 <= once.collision_time_s <= 2.7


def test_closing_in_on_a_car_ahead_fails_ttc_without_colliding():
    lead = car("lead", 22.5, speed=6.0)  # rear bumper 18 m ahead of the ego's front, 6 m/s
    scene = road_scene([lead], speed=10.0)
    # keeping 10 m/s closes the gap at 4 m/s: 2 m left at 4 s (no contact), under 0.9 s of closing
    r = score_trajectory(scene, straight(10.0))
    assert r.nc == 1.0 and r.ttc == 0.0 and r.ttc_agent_id == "lead"
    assert 3.0 < r.ttc_time_s <= 4.0
    assert r.pdms == pytest.approx((5 * r.ep + 2 * r.c) / 12)
    # easing off at -1 m/s^2 keeps the distance
    assert score_trajectory(scene, straight(10.0, accel=-1.0)).ttc == 1.0
    # standing still: speeds under 5e-3 m/s are ignored
    idle = road_scene([car("lead", 5.5)], speed=0.0, expert=np.zeros((8, 3)))
    assert score_trajectory(idle, np.zeros((8, 3))).ttc == 1.0


def test_progress_is_relative_to_safe_references():
    scene = road_scene()
    slow = straight(5.0)  # 20 m against the expert's 40 m (but: speed drop 10 -> 5 m/s at t=0)
    r = score_trajectory(scene, slow, SPLINE)
    assert r.ep == pytest.approx(0.5, abs=0.01)
    assert r.reference_progress_m == pytest.approx(40.0, abs=1e-6)
    # NAVSIM's reference is PDM-Closed's best proposal (IDM from 10 m/s towards the 15 m/s fallback limit: 47.6 m),
    # and the slow plan is tracked from the logged 10 m/s (25.5 m): EP 0.53
    r = score_trajectory(scene, slow)
    assert r.reference_progress_m == pytest.approx(47.6, abs=0.1) and r.ep == pytest.approx(25.47 / 47.62, abs=0.01)
    # a standing car 20 m ahead makes the fast references unsafe: the best safe one brakes
    blocked = road_scene([car("parked", 20.0)], expert=np.stack([np.full(8, 12.0), np.zeros(8), np.zeros(8)], -1))
    assert reference_progress(blocked) < 15.0
    # EP = 1 when the best safe progress is under 5 m (standing 3 m behind a standing car)
    stopped = road_scene([car("queue", 7.5)], speed=0.0, expert=np.zeros((8, 3)))
    r = score_trajectory(stopped, np.zeros((8, 3)))
    assert r.reference_progress_m < 5.0 and r.ep == 1.0 and r.pdms == 1.0
    # on a free road a standing ego is expected to move off: the references drive
    free = road_scene(speed=0.0, expert=np.zeros((8, 3)))
    assert score_trajectory(free, np.zeros((8, 3))).ep == 0.0


def test_batch_matches_single_and_is_deterministic():
    scene = road_scene([car("lead", 30.0, speed=5.0)])
    rng = np.random.default_rng(0)
    batch = straight(10.0)[None] + rng.normal(0, 0.6, (16, 8, 3)) * [1.0, 1.0, 0.02]
    many = score_trajectories(scene, batch)
    ones = [score_trajectory(scene, b) for b in batch]
    assert [m.pdms for m in many] == [o.pdms for o in ones]
    assert score_trajectories(scene, torch.as_tensor(batch))[3] == many[3]


def test_boxes_overlap_known_cases():
    assert boxes_overlap(0, 0, 0, 2, 1, 3.9, 0, 0, 2, 1)  # 4 m long boxes, 3.9 m apart
    assert not boxes_overlap(0, 0, 0, 2, 1, 4.1, 0, 0, 2, 1)
    # rotated by 45 degrees: the corner reaches sqrt(2^2+1^2)~2.24 diagonally but not 3 m
    assert not boxes_overlap(0, 0, 0, 2, 1, 0, 3.3, math.pi / 4, 2, 1)
    assert boxes_overlap(0, 0, 0, 2, 1, 0, 2.5, math.pi / 4, 2, 1)


# ------------------------------------------------------------------------------------- parsing


def test_json_round_trip(tmp_path):
    scene = road_scene([car("lead", 30.0, speed=5.0), AgentTrack("p", "pedestrian", 0.6, 0.6,
                                                                   np.array([[0.0, 15.0, -4.0, 1.57]]))])
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(scene.to_json_dict()))
    back = load_scene(path)
    assert back.to_json_dict() == scene.to_json_dict()
    assert score_trajectory(back, back.expert) == score_trajectory(scene, scene.expert)
    traj = tmp_path / "traj.json"
    traj.write_text(json.dumps({"poses": straight(8.0).tolist()}))
    np.testing.assert_array_equal(load_trajectory(traj), straight(8.0))


def _valid() -> dict:
    return road_scene([car("a0", 30.0), car("a1", 40.0), car("a2", 50.0), car("a3", 60.0)]).to_json_dict()


def _mutate(path, value):
    d = _valid()
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


@pytest.mark.parametrize("path, value, field", [
    (("ego", "speed"), KeyError, "ego.speed"),
    (("ego", "width"), "wide", "ego.width"),
    (("ego", "length"), float("nan"), "ego.length"),
    (("command",), "uturn", "command"),
    (("drivable_area",), [[[0, 0], [1, 0]]], "drivable_area[0]"),
    (("centerline",), [[0, 0, 0]], "centerline"),
    (("agents", 3, "track"), [[0.0, 1.0, 2.0]], "agents[3].track: expected rows [t, x, y, heading]"),
    (("agents", 2, "track"), [[0.0, 1.0, 2.0, 0.0], [0.0, 2.0, 2.0, 0.0]], "agents[2].track"),
    (("agents", 1, "type"), "truck", "agents[1].type"),
    (("agents", 0, "id"), KeyError, "agents[0].id"),
    (("agents", 0, "length"), -1.0, "agents[0].length"),
    (("expert",), straight(10.0)[:7].tolist(), "expert"),
    (("expert",), [[float("inf"), 0, 0]] * 8, "expert"),
])
def test_malformed_scene_names_the_field(path, value, field):
    with pytest.raises(SceneFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        PlanningScene.from_json_dict(_mutate(path, value))


def test_malformed_trajectory_and_files(tmp_path):
    bad = tmp_path / "traj.json"
    for doc, field in [({"pose": []}, "poses: missing"), ({"poses": [[0, 0, 0]] * 7}, "expected 8 poses"),
                       ({"poses": [[0, 0]] * 8}, "poses"), ({"poses": [[0, 0, "x"]] * 8}, "poses")]:
        bad.write_text(json.dumps(doc))
        with pytest.raises(SceneFormatError, match=field):
            load_trajectory(bad)
    bad.write_text('{"poses": [[0, 0, NaN]' + ", [0, 0, 0]" * 7 + "]}")
    with pytest.raises(SceneFormatError, match="NaN or inf"):
        load_trajectory(bad)
    with pytest.raises(SceneFormatError, match="not valid JSON"):
        bad.write_text("{")
        load_scene(bad)
    with pytest.raises(SceneFormatError, match="file not found"):
        load_scene(tmp_path / "missing.json")
    with pytest.raises(SceneFormatError, match=r"poses\[1\]"):
        batch = np.zeros((2, 8, 3))
        batch[1, 4, 2] = np.nan
        score_trajectories(road_scene(), batch)


def test_from_clip():
    scene = road_scene([car("lead", 30.0, speed=5.0)])
    clip = Clip(
        scene_name="s", sample_token="tok", timestamp=0,
        observation=Observation(frames=torch.zeros(1, 3, 4, 4), ego_status=torch.tensor([10.0, 0.5, 0.01]),
                                command=2),
        target=Target(frames=torch.zeros(1, 3, 4, 4), trajectory=torch.as_tensor(straight(10.0), dtype=torch.float32),
                      agents=scene.agents, drivable_area=scene.drivable_area, centerline=scene.centerline,
                      ego_size=(4.6, 1.95)),
    )
    s = PlanningScene.from_clip(clip)
    assert (s.ego_speed, s.ego_acceleration, s.command, s.ego_length, s.ego_width) == (10.0, 0.5, "right", 4.6, 1.95)
    assert s.ego_yaw_rate == pytest.approx(0.01)
    np.testing.assert_allclose(s.expert, straight(10.0))
    assert score_trajectory(s, s.expert).pdms >= 0.9


def test_config_changes_the_answer():
    scene = road_scene()
    strict = PDMScorerConfig(min_lon_accel=-2.0)
    assert score_trajectory(scene, straight(10.0, accel=-2.5), strict).c == 0.0


# ------------------------------------------------------------------------------------- NAVSIM's simulation
NAVSIM = PDMScorerConfig(simulation="navsim")


def test_navsim_tracker_reproduces_a_feasible_plan():
    """A constant-speed straight plan from the matching start state is tracked exactly; on a circle the tracked
    path stays within metres of the reference, closer the gentler the curve (the tracker is not a spline)."""
    from reworld.planning.navsim import reference_states, simulate

    sim = simulate(straight(10.0)[None], 10.0)
    np.testing.assert_allclose(sim.x[0, ::5][1:], straight(10.0)[:, 0], atol=1e-9)
    np.testing.assert_allclose(sim.y, 0.0, atol=1e-12)
    errors = []
    for radius in (15.0, 50.0, 200.0):
        ang = 8.0 * T / radius
        circle = np.stack([radius * np.sin(ang), radius * (1 - np.cos(ang)), ang], -1)
        ref, s = reference_states(circle[None]), simulate(circle[None], 8.0)
        errors.append(np.hypot(s.x - ref[..., 0], s.y - ref[..., 1]).max())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.2 and errors[0] < 2.5


def test_navsim_comfort_known_answers():
    """NAVSIM's comfort on the simulated states: waypoint noise of 0.05–0.3 m, a 0.2 m longitudinal and a 0.5 m
    lateral offset of every pose all pass (the spline scorer fails many of them); braking from 10 to 0 m/s in
    0.5 s fails."""
    rng = np.random.default_rng(0)
    scene = road_scene()
    for sd in (0.05, 0.1, 0.2, 0.3):
        noisy = straight(10.0)[None] + np.concatenate([rng.normal(0, sd, (50, 8, 2)), np.zeros((50, 8, 1))], -1)
        assert all(r.c == 1.0 for r in score_trajectories(scene, noisy, NAVSIM)), sd
        if sd == 0.1:
            spline = np.mean([r.c for r in score_trajectories(scene, noisy, SPLINE)])
            assert spline < 0.5  # the untracked spline reads the same noise as discomfort
    for dx, dy in ((0.2, 0.0), (0.0, 0.5)):
        shifted = straight(10.0) + np.array([dx, dy, 0.0])
        assert score_trajectory(scene, shifted, NAVSIM).c == 1.0, (dx, dy)
    stop = np.stack([np.where(T <= 0.5, 10 * T - 10 * T**2, 2.5), np.zeros(8), np.zeros(8)], -1)
    res = score_trajectory(scene, stop, NAVSIM)
    assert res.c == 0.0 and "lon_accel" in res.comfort_violations


def test_navsim_mode_scores_every_sub_metric_on_the_simulated_states():
    scene = road_scene(agents=[car("parked", 30.0)])
    into = score_trajectory(scene, straight(10.0), NAVSIM)
    assert into.nc == 0.0 and into.collision_agent_id == "parked"
    free = score_trajectory(road_scene(), straight(10.0), NAVSIM)
    assert free.nc == free.dac == free.c == free.ttc == 1.0 and free.pdms > 0.9
    with pytest.raises(ValueError, match="simulation must be"):
        score_trajectory(road_scene(), straight(10.0), PDMScorerConfig(simulation="lqr"))


def test_navsim_tracker_profiles_equal_the_direct_least_squares():
    """The profiles are NAVSIM's regularised least squares, solved in closed form (the speed fit's normal matrix
    is constant, the curvature fit's tridiagonal): equal to the direct pseudo-inverse solution."""
    from reworld.planning.navsim import _profile_operators, _wrap, reference_states, tracker_profiles

    rng = np.random.default_rng(1)
    poses = np.stack([10 * T, 0.3 * T**2, 0.05 * T], -1)[None] + np.concatenate(
        [rng.normal(0, 0.3, (20, 8, 2)), rng.normal(0, 0.05, (20, 8, 1))], -1)
    ref = reference_states(poses)
    speed, curvature = tracker_profiles(ref)
    dt, theta = 0.1, ref[:, :-1, 2]
    C, D = _profile_operators(theta.shape[1], dt)
    A = np.concatenate([dt * np.cos(theta)[..., None] * C, dt * np.sin(theta)[..., None] * C], 1)
    dxy = np.diff(ref[..., :2], axis=1)
    y = np.concatenate([dxy[..., 0], dxy[..., 1]], 1)[..., None]
    At = np.swapaxes(A, 1, 2)
    v = (C @ (np.linalg.pinv(At @ A + 1e-4 * D.T @ D) @ At @ y))[..., 0]
    B = dt * v[..., None] * C
    Bt = np.swapaxes(B, 1, 2)
    Q = np.diag([1e-10] + [1e-2] * (theta.shape[1] - 1))
    k = (C @ (np.linalg.pinv(Bt @ B + Q) @ Bt @ _wrap(np.diff(ref[..., 2], axis=1))[..., None]))[..., 0]
    np.testing.assert_allclose(speed, v, atol=1e-9)
    np.testing.assert_allclose(curvature, k, atol=1e-9)


def test_dac_counts_the_starting_pose_as_navsim_does():
    """NAVSIM tests the drivable area at every step, t = 0 included: an ego whose box starts with its rear over the
    road's end fails DAC at 0.0 s, whatever it plans; the spline scorer (steps 1 … T) does not look at t = 0."""
    road = road_scene()
    scene = dataclasses.replace(road, drivable_area=[np.array([[-1.3, -1.75], [200.0, -1.75], [200.0, 5.25],
                                                               [-1.3, 5.25]])])
    assert score_trajectory(road, straight(10.0)).dac == 1.0
    start = score_trajectory(scene, straight(10.0))
    assert start.dac == 0.0 and start.off_road_time_s == 0.0  # the rear corners at x = −2.25 at t = 0
    assert score_trajectory(scene, straight(10.0), SPLINE).dac == 1.0  # at 0.1 s the rear is at −1.25: on the road


def test_drivable_area_keeps_its_holes():
    """A traffic island inside the road is not drivable: driving through it fails DAC, passing beside it does
    not; the holes survive scene.json and the BEV draws them."""
    island = np.array([[20.0, -0.5], [35.0, -0.5], [35.0, 1.5], [20.0, 1.5]])
    base = road_scene()
    scene = PlanningScene(
        ego_speed=10.0, ego_acceleration=0.0, ego_yaw_rate=0.0, ego_length=4.5, ego_width=1.9, command="straight",
        drivable_area=base.drivable_area, drivable_holes=[[island]], centerline=base.centerline,
        expert=straight(10.0))
    assert score_trajectory(base, straight(10.0)).dac == 1.0  # without the hole the road is clear
    through = score_trajectory(scene, straight(10.0))
    assert through.dac == 0.0 and 1.0 < through.off_road_time_s < 2.5
    beside = np.stack([10 * T, np.full(8, 3.5), np.zeros(8)], -1)
    beside[0, 1] = 1.75  # over to the left lane before the island: the untracked spline passes beside it
    assert score_trajectory(scene, beside, SPLINE).dac == 1.0
    # NAVSIM's tracker follows that jump late and overshoots towards the far edge (a lane change in 1 s is not
    # drivable); stopping 5 m short of the island keeps to the road in both
    stop = np.stack([np.where(T < 10 / 3.5, 10 * T - 1.75 * T**2, 100 / 7), np.zeros(8), np.zeros(8)], -1)
    assert score_trajectory(scene, beside).dac == 0.0
    assert score_trajectory(scene, stop).dac == 1.0 and score_trajectory(scene, stop, SPLINE).dac == 1.0
    again = PlanningScene.from_json_dict(json.loads(json.dumps(scene.to_json_dict())))
    assert len(again.drivable_holes[0]) == 1 and score_trajectory(again, straight(10.0)).dac == 0.0
    assert "drivable_holes" not in base.to_json_dict()  # scenes without holes keep the old file
    with pytest.raises(SceneFormatError, match="one list of rings per drivable polygon"):
        PlanningScene(ego_speed=1.0, ego_acceleration=0.0, ego_yaw_rate=0.0, ego_length=4.5, ego_width=1.9,
                      command="straight", drivable_area=base.drivable_area, drivable_holes=[[island], []],
                      centerline=base.centerline)
    from reworld.viz.bev import bev_figure

    assert any(t.name == "not drivable (hole)" for t in bev_figure(scene).data)


def _navsim_scene(agents, lanes=(), intersections=(), speed=10.0):
    return PlanningScene(
        ego_speed=speed, ego_acceleration=0.0, ego_yaw_rate=0.0, ego_length=4.5, ego_width=1.9, command="straight",
        drivable_area=[np.array([[-60.0, -7.0], [200.0, -7.0], [200.0, 7.0], [-60.0, 7.0]])],
        centerline=np.stack([np.linspace(-60, 200, 24), np.zeros(24)], -1), agents=list(agents),
        lanes=list(lanes), intersections=list(intersections))


def _lane(y0, y1):
    return np.array([[-60.0, y0], [200.0, y0], [200.0, y1], [-60.0, y1]])


def test_navsim_at_fault_types():
    """NAVSIM's collision types: a stopped car hit from behind is at fault; a car merging into our side is not
    while the ego keeps its lane, and is when the ego straddles two lanes (the geometric rule faults both)."""
    stopped = car("stopped", 25.0)
    assert score_trajectory(_navsim_scene([stopped]), straight(10.0), NAVSIM).nc == 0.0
    ts = np.arange(0, 4.01, 0.5)  # alongside, a metre behind, drifting from the left lane into our side
    merger = AgentTrack("merger", "vehicle", 4.5, 1.9,
                        np.stack([ts, 10 * ts - 1.0, np.clip(3.5 - 1.2 * ts, 1.2, None), 0 * ts], -1))
    keeps = _navsim_scene([merger], lanes=[_lane(-1.75, 1.75), _lane(1.75, 5.25)])
    straddles = _navsim_scene([merger], lanes=[_lane(-3.5, 0.0), _lane(0.0, 3.5)])
    assert score_trajectory(keeps, straight(10.0), NAVSIM).nc == 1.0
    assert score_trajectory(keeps, straight(10.0), SPLINE).nc == 0.0  # the geometric rule counts every lateral contact
    hit = score_trajectory(straddles, straight(10.0), NAVSIM)
    assert hit.nc == 0.0 and hit.collision_agent_id == "merger"


def test_navsim_ttc_counts_crossing_traffic_inside_a_junction():
    """NAVSIM's TTC rule on given states: a car at 32° off the ego's heading, which the ego box pushed by its
    speed over 0.9 s would meet, is not 'ahead' (< 30°); inside an intersection it counts anyway, outside not."""
    from reworld.planning import pdm as P

    crossing = AgentTrack("crossing", "vehicle", 4.5, 1.9, np.array([[0.0, 4.5, 2.8, np.pi / 2]]))
    junction = np.array([[-5.0, -20.0], [40.0, -20.0], [40.0, 20.0], [-5.0, 20.0]])
    n_t = NAVSIM.num_steps + 1
    zeros = np.zeros((1, n_t))
    # held at the origin while reporting 2 m/s: only the pushed box can reach the car
    states = P._States(zeros, zeros, zeros, zeros + 2.0, zeros, zeros, zeros)
    for inter, expected in (((), 1.0), ((junction,), 0.0)):
        scene = _navsim_scene([crossing], intersections=inter, speed=2.0)
        ag = P._agent_states(scene, n_t + 9, NAVSIM)
        areas = P.ego_areas(scene, states, NAVSIM)
        assert areas[2].all() == bool(inter)
        assert P._collisions_navsim(scene, states, ag, areas, NAVSIM)[0][0] == 1.0  # never touched
        ttc, agent, step = P._time_to_collision_navsim(scene, states, ag, areas, NAVSIM)
        assert ttc[0] == expected and (agent[0] == 0) == (expected == 0.0)


def test_navsim_ep_is_relative_to_pdm_closed():
    """NAVSIM's EP reference: PDM-Closed's IDM proposals (0.2 … 1.0 × the 15 m/s fallback limit, 0 / ±1 m)
    scored against constant-velocity forecasts. On a free road it speeds up towards the limit, so the expert at
    10 m/s gets EP < 1 and a faster safe plan EP = 1; behind a slower car it follows without touching it; a plan
    that barely moves (the best progress under 5 m) is not penalised."""
    from reworld.planning.pdm import pdm_closed_trajectory as pdm_closed
    from reworld.planning.pdm_closed import proposals

    free = road_scene()
    assert proposals(free).shape == (15, 8, 3)
    ref = pdm_closed(free)
    assert np.allclose(ref[:, 1], 0.0) and ref[-1, 0] > 10.0 * 4.0  # on the centreline, faster than 10 m/s
    ref_m = reference_progress(free, NAVSIM)
    assert 40.0 < ref_m < 60.0
    expert = score_trajectory(free, straight(10.0), NAVSIM, reference=ref_m)
    assert expert.ep == pytest.approx(expert.progress_m / ref_m) and expert.ep < 1.0
    assert score_trajectory(free, straight(14.0), NAVSIM, reference=ref_m).ep == 1.0
    follow = road_scene(agents=[car("lead", 30.0, speed=5.0)])
    ref = pdm_closed(follow)
    res = score_trajectory(follow, ref, NAVSIM, reference=0.0)
    assert res.nc == 1.0 and ref[-1, 0] < 30.0 + 5.0 * 4.0  # behind the lead car
    crawl = np.stack([0.1 * T, np.zeros(8), np.zeros(8)], -1)
    slow = road_scene(speed=0.0)
    assert score_trajectory(slow, crawl, NAVSIM, reference=1.0).ep == 1.0


@pytest.mark.parametrize("config", [None, NAVSIM], ids=["spline", "navsim"])
def test_rear_axle_poses_place_the_box_ahead_of_them(config):
    """With nuScenes' convention (poses at the rear axle, the box centre 1.385 m ahead) a stop that leaves the
    pose 3.0 m behind a parked car's rear (a slow approach, which the tracker follows closely) still hits it: the
    front bumper is 1.385 + 2.25 m ahead of the pose; with box-centre poses the same stop is clear by 0.75 m. The offset survives scene.json and reaches the BEV."""
    from reworld.viz.bev import bev_figure

    def scene_with(offset):
        s = road_scene([car("parked", 7.0 + 2.25)], speed=2.0)  # rear bumper at 7.0 m
        return dataclasses.replace(s, ego_center_offset=offset)

    stop = np.stack([2 * T - 0.25 * T**2, np.zeros(8), np.zeros(8)], -1)  # from 2 m/s to a stop at 4 m, t = 4 s
    centre, axle = scene_with(0.0), scene_with(1.385)
    assert score_trajectory(centre, stop, config).nc == 1.0
    hit = score_trajectory(axle, stop, config)
    assert hit.nc == 0.0 and hit.collision_agent_id == "parked"
    again = PlanningScene.from_json_dict(json.loads(json.dumps(axle.to_json_dict())))
    assert again.ego_center_offset == 1.385 and "center_offset" not in centre.to_json_dict()["ego"]
    ego = next(t for t in bev_figure(axle, []).data if t.name == "ego")
    assert max(ego.y) == pytest.approx(1.385 + 2.25)  # the BEV's vertical axis is the ego's x (forward)
    with pytest.raises(SceneFormatError, match="center_offset"):
        dataclasses.replace(axle, ego_center_offset=3.0)
