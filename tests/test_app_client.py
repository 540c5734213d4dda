"""The launched app, scripted with `gradio_client`: every named endpoint, bad values, two clients at once."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ports import free_port
from test_app_support import tiny_demo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ENDPOINTS = {"/list_scenes", "/scene", "/generate_and_plan", "/generate", "/plan", "/stop", "/velocity", "/velocity_preview", "/embedding",
             "/compare", "/ablation", "/toy", "/guidance_sweep", "/alignment"}


SERVED_DEMO = {}


@pytest.fixture(scope="module")
def served(tiny_config, tiny_sweep, tmp_path_factory):
    import shutil

    from app.cli import serve

    out = tmp_path_factory.mktemp("app-client")
    abl = tmp_path_factory.mktemp("ablation")
    for f in tiny_sweep.glob("guidance_sweep_tiny.*"):
        shutil.copy(f, abl)
    (abl / "curves.csv").write_text("step,run,seed,metric,value\n0,vanilla,0,val/loss,1.0\n10,vanilla,0,val/loss,0.5\n")
    demo, ctx = tiny_demo(tiny_config, out, ablation_dir=abl)
    port = free_port()
    serve(demo, "127.0.0.1", port, prevent_thread_lock=True)
    SERVED_DEMO["demo"] = demo
    yield f"http://127.0.0.1:{port}/", ctx
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def test_every_named_endpoint_answers(served, client, monkeypatch):
    from analysis import representations as R

    url, ctx = served
    api = client.view_api(print_info=False, return_format="dict")
    assert ENDPOINTS <= set(api["named_endpoints"])
    names = {ep: [p["parameter_name"] for p in info["parameters"]] for ep, info in api["named_endpoints"].items()}
    assert names["/scene"] == ["scene", "sample"]  # named for people, as the README's table lists them
    assert names["/generate"] == names["/velocity"] == ["checkpoint", "scene", "sample", "steps", "guidance", "seed",
                                                        "command"]
    assert names["/plan"] == ["checkpoint", "scene", "sample", "samples", "seed", "command"]
    assert names["/generate_and_plan"] == ["checkpoint", "scene", "sample", "samples", "steps", "guidance", "seed",
                                           "command"]
    assert names["/embedding"] == ["checkpoints", "clips", "negatives", "dims", "seed"]
    assert names["/compare"] == ["checkpoint_a", "checkpoint_b", "scene", "sample", "steps", "guidance", "seed",
                                 "samples", "command"]
    assert names["/velocity_preview"] == ["step", "layer"] and names["/ablation"] == ["csv"]
    assert names["/toy"] == ["guidance", "seed"] and names["/guidance_sweep"] == ["sweep", "guidance"]
    assert names["/alignment"] == ["checkpoints", "scene", "sample", "negatives", "seed"]

    scenes = client.predict(api_name="/list_scenes")
    assert len(scenes) == 4
    name = scenes[0]["scene"]
    img, bev, info = client.predict(name, 1, api_name="/scene")
    assert img.endswith(".png") and info["sample_index"] == 1 and bev is not None

    video, status = client.predict("reworld", name, 0, 2, 1.4, 3, "logged", api_name="/generate")
    path = video["video"] if isinstance(video, dict) else video
    assert path.endswith(".mp4") and "`cpu`" in status
    import av

    with av.open(path) as f:
        assert f.streams.video[0].codec_context.name == "h264"

    bev, table, status = client.predict(checkpoint="reworld", scene=name, sample=0, samples=4, seed=3, command="right",
                                        api_name="/plan")
    assert len(table["data"]) == 4 and "PDMS" in table["headers"] and "4 samples" in status

    heat, curves, numbers, status = client.predict("reworld", name, 0, 3, 1.0, 0, "logged", api_name="/velocity")
    assert numbers["steps"] == 3 and heat is not None
    preview = client.predict(1, "block_0", api_name="/velocity_preview")  # this client's own last analysis
    assert preview.endswith(".png")

    monkeypatch.setattr(R, "_fit_umap", lambda feats, n_components, **kw: np.asarray(feats[:, :n_components]))
    a, b, sep, numbers = client.predict(["reworld", "vanilla"], 2, 4, 2, 0, api_name="/embedding")
    assert a is not None and b is not None and set(numbers["checkpoints"]) == {"reworld", "vanilla"}

    out = client.predict("reworld", "vanilla", name, 0, 2, 1.0, 0, 2, "logged", api_name="/compare")
    assert len(out) == 7 and [r[0] for r in out[4]["data"]][:2] == ["reworld", "vanilla"]
    assert out[4]["data"][2][0].startswith("A − B, paired by sample")

    fig, note, verdicts = client.predict("curves.csv", api_name="/ablation")
    assert fig is not None and "vanilla" in note
    fields, sweep, text = client.predict(guidance=2.0, seed=1, api_name="/toy")
    assert fields is not None and sweep is not None and "w = 2" in text
    fig, frames, text = client.predict(sweep="tiny", guidance=0.1, api_name="/guidance_sweep")
    assert fig is not None and frames is not None and "**w = 0**" in text and "nearest 0.1" in text
    fig, note, numbers = client.predict(checkpoints=["reworld", "vanilla"], scene=name, sample=0, negatives=3, seed=0,
                                        api_name="/alignment")
    assert fig is not None and set(numbers["checkpoints"]) == {"reworld", "vanilla"} and "split" in note
    assert client.predict(api_name="/stop") == "Nothing is running."


BAD = [
    ("/generate", ("reworld", "scene-9999", 0, 2, 1.0, 0, "logged"), "scene-9999"),
    ("/generate", ("reworld", "S", 0, 0, 1.0, 0, "logged"), "steps|minimum"),
    ("/generate", ("reworld", "S", 0, 500, 1.0, 0, "logged"), "steps|maximum"),
    ("/generate", ("reworld", "S", 0, 2, 1.0, -5, "logged"), "seed"),
    ("/generate", ("reworld", "S", 0, 2, 1.0, 2**40, "logged"), "seed"),
    ("/generate", ("../reworld", "S", 0, 2, 1.0, 0, "logged"), "reworld"),
    ("/plan", ("reworld", "S", 0, 0, 0, "logged"), "samples|minimum"),
    ("/plan", ("reworld", "S", 0, 2, 0, "sideways"), "sideways"),
    ("/velocity", ("reworld", "S", 0, 2, 9.0, 0, "logged"), "guidance|maximum"),
    ("/toy", (4.0, 0), "guidance|maximum"),
    ("/alignment", (["reworld"], "S", 0, 40, 0), "negatives|hard negatives|maximum"),
    ("/alignment", (["../x"], "S", 0, 3, 0), "x"),
    ("/ablation", ("../../etc/passwd",), "passwd"),
    ("/guidance_sweep", ("../../etc/passwd", 1.0), "passwd"),
    ("/guidance_sweep", ("tiny", 4.0), "guidance|maximum"),
]


@pytest.mark.parametrize("endpoint,args,message", BAD, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD)])
def test_bad_api_values_are_clear_errors_and_the_model_is_not_touched(served, client, monkeypatch, endpoint, args,
                                                                      message):
    from gradio_client.exceptions import AppError

    url, ctx = served
    scene = next(iter(ctx.scenes))
    args = tuple(scene if a == "S" else a for a in args)
    calls = []
    for pipe in ctx.pipelines.values():
        for method in ("generate", "plan"):
            monkeypatch.setattr(pipe, method, lambda *a, _m=method, **k: calls.append(_m))
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=endpoint)
    assert calls == []


def test_generate_and_plan_streams_the_plan_then_the_video(served, client):
    """The page's Generate & plan is one event: its first output carries the plan (BEV, table, status) while the video
    is still to come, its last the video."""
    url, ctx = served
    scene = list(ctx.scenes)[1]
    job = client.submit("reworld", scene, 0, 3, 2, 1.4, 5, "logged", api_name="/generate_and_plan")
    job.result()
    first, last = job.outputs()[0], job.outputs()[-1]
    assert len(job.outputs()) == 2
    bev, table, plan_status, _, gen_status = first
    assert bev is not None and len(table["data"]) == 3 and "3 samples" in plan_status and gen_status == "Generating …"
    video, gen_status = last[3], last[4]
    path = video["video"] if isinstance(video, dict) else video
    assert path.endswith(".mp4") and "generated" in gen_status and "2 steps" in gen_status


def test_the_queue_polls_every_10_ms(served):
    """The app's queue does not poll every 1 ms (gradio's default, ≈ 10 % of a core; `app.cli.quieter_queue`): a
    gradio without that private setting fails here, so that the change is seen."""
    from app.cli import QUEUE_POLL_S

    assert SERVED_DEMO["demo"]._queue.sleep_when_free == QUEUE_POLL_S == 0.01


def test_nan_guidance_over_raw_http_is_a_clear_error(served):
    """gradio_client cannot send NaN (strict JSON), but a raw HTTP client can: the server must refuse it."""
    import httpx

    url, ctx = served
    scene = next(iter(ctx.scenes))
    body = '{"data": ["reworld", "%s", 0, 2, NaN, 0, "logged"]}' % scene
    r = httpx.post(url + "gradio_api/call/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    events = httpx.get(url + f"gradio_api/call/generate/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "guidance w must be a finite number" in events


def test_files_are_served_only_from_the_app_folders(served):
    import httpx

    url, ctx = served
    repo = Path(__file__).resolve().parent.parent
    for path in ("/etc/passwd", repo / "pyproject.toml", repo / "app" / "cli.py", ctx.out_dir / ".." / "x"):
        r = httpx.get(f"{url}gradio_api/file={path}")
        assert r.status_code in (403, 404), (path, r.status_code)
    probe = ctx.out_dir / "probe.txt"
    probe.write_text("ok")
    assert httpx.get(f"{url}gradio_api/file={probe}").text == "ok"


def test_two_clients_at_once_both_get_their_answers(served):
    from gradio_client import Client

    url, ctx = served
    scene = next(iter(ctx.scenes))
    clients = [Client(url, verbose=False) for _ in range(2)]
    results, errors = [None, None], []

    def call(i):
        try:
            results[i] = clients[i].predict("reworld", scene, 0, 3, 1.0, i, "logged", api_name="/generate")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    paths = [r[0]["video"] if isinstance(r[0], dict) else r[0] for r in results]
    assert all(p.endswith(".mp4") for p in paths) and paths[0] != paths[1]
    assert "seed 0" in results[0][1] and "seed 1" in results[1][1]
