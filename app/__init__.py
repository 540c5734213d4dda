"""ReWorld Studio: the Gradio app over loaded `WorldActionPipeline`s (`python -m app`, docs/design.md §7).

Views: Scene · Generate & plan · Intermediate vs final velocity · Representations · Ablation compare.

Named API endpoints (script them with `gradio_client.Client("http://127.0.0.1:7860/")`; every value is
checked on the server, a bad one is a `gr.Error` and the model is not touched):

| endpoint | inputs | returns |
|---|---|---|
| `/list_scenes` | — | JSON list: scene, description, samples, split |
| `/scene` | scene, sample index | camera frames (PNG), BEV figure (plotly JSON), sample facts (JSON) |
| `/generate` | checkpoint, scene, sample index, steps (1–200), guidance w (0–5), seed (0–2³¹−1), command (`logged`/left/straight/right) | MP4 (H.264: generated future beside the logged one), status (device, seconds) |
| `/plan` | checkpoint, scene, sample index, trajectory samples (1–64), seed, command | BEV with the sampled trajectories, PDM sub-score table, status |
| `/stop` | — | stops this session's running `/generate`, `/velocity` or `/compare` between two sampler steps |
| `/velocity` | checkpoint, scene, sample index, steps, guidance w, seed, command | heatmap of the cosine to v_f per step and layer (every block through the output layer, and each trained head), per-step curves, numbers (JSON), status |
| `/velocity_preview` | step, layer (`block_k` / `head_k`; empty: the default) | that layer's decoded x0 prediction beside the final output's and their amplified difference, at that step (of this session's last `/velocity`) |
| `/embedding` | checkpoints (1–2), clips (2–64), hard negatives per clip (1–16), UMAP dims (2/3), seed | UMAP figure per checkpoint, separation figure, numbers (JSON) |
| `/compare` | checkpoint A, checkpoint B, scene, sample index, steps, guidance w, seed, trajectory samples, command | two MP4s, two BEVs, side-by-side table, two velocity-curve figures |
| `/ablation` | CSV name in `assets/ablation/` | training curves (or metric table) figure, note |

Heavy endpoints (`/generate`, `/plan`, `/velocity`, `/embedding`, `/compare`) run one at a time on the
model; others wait in the queue and see their position.
"""


def __getattr__(name):
    if name == "create_demo":
        from .demo import create_demo

        return create_demo
    raise AttributeError(f"module 'app' has no attribute {name!r}")
