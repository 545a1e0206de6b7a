"""Learning: the SupCon demo on digits (stage 1 + linear probe, about 3 minutes on 2 CPU cores)
reaches >= 95% held-out top-1 and clearly beats the same probe on a random encoder."""

from vistra.demos import run_demo


def test_supcon_digits_demo_learns(tmp_path):
    results = run_demo("supcon", out_dir=tmp_path)
    print(results)
    assert results["probe_top1"] >= 0.95
    assert results["probe_top1"] >= results["random_probe_top1"] + 0.05
    assert results["pretrain_knn_top1"] >= 0.85
    assert (tmp_path / "demo_supcon" / "embeddings.png").stat().st_size > 1000
    # where the time went: every part measured, together the demo's wall time
    time = results["time"]
    assert min(time[part] for part in ("data", "training", "evaluation")) > 0
    assert time["training"] > time["data"]  # in-memory digits: steps dominate
    assert abs(sum(time.values()) - results["pretrain_and_probe_seconds"]) < 30
