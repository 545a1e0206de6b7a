"""Learning: the SupCon demo on digits (stage 1 + linear probe, about 3 minutes on 2 CPU cores)
reaches >= 95% held-out top-1 and clearly beats the same probe on a random encoder."""

import time

from vistra.demos import run_demo


def test_supcon_digits_demo_learns(tmp_path):
    started = time.perf_counter()
    results = run_demo("supcon", out_dir=tmp_path)
    wall = time.perf_counter() - started
    print(results)
    assert results["probe_top1"] >= 0.95
    assert results["probe_top1"] >= results["random_probe_top1"] + 0.05
    assert results["pretrain_knn_top1"] >= 0.85
    assert (tmp_path / "demo_supcon" / "embeddings.png").stat().st_size > 1000
    # Where the time went, against the clock outside the demo: the parts cover all of it but
    # building the run (model, data, Lightning) before the fit starts, and the picture.
    parts = results["time"]
    assert min(parts[part] for part in ("data", "training", "evaluation")) > 0
    assert parts["training"] > parts["data"]  # in-memory digits: steps dominate
    assert wall - 20 <= sum(parts.values()) <= wall
