"""The GPU check runs end to end on the CPU (`--dry-run`, tiny configs), so a session lent a GPU can trust it."""
import json

from benchmarks import gpu_check


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    rc = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--stages", "vae,video"])
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 0, {k: v for k, v in doc.items() if isinstance(v, dict) and "error" in v}
    assert doc["seed_parity"]["max_abs_diff_tf32_off"] == 0.0  # CPU against CPU: the same sample
    for dtype in ("fp32", "bf16"):
        assert doc["stage1_step"][dtype]["step_gflop"] > 0 and doc["stage1_step"][dtype]["step_s"] > 0
        assert all(row["exit"] == 0 and row["finite"] for row in doc["stages"][dtype].values())
    # LTX's clip shape: 25 frames at 256×512 through an 8× / 32× VAE
    assert doc["paper_cut"]["latent_shape"][2:] == [4, 8, 16]
    assert doc["generate_plan"]["bf16_vs_fp32_psnr_db"] > 30
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check (dry run")
