"""``vistra serve`` under concurrent clients against ``Predictor`` called in a loop.

The model is the README's DETR (ResNet-50, 6 + 6 layers, 100 queries, 800 / 1333) with random
weights; the image scikit-learn's ``china.jpg`` (640 x 427, prepared to 800 x 1198). Three
servers run side by side, one model worker each, at ``--max-batch-size`` 1, 4 and 8
(``--batch-timeout 0.05``); ``--clients`` threads on 127.0.0.1 each post the JPEG as a raw body
until ``--requests`` answers have come back. The reference is ``Predictor`` called on the
decoded image in a loop in this process (one image per call, no HTTP). The sides take turns
over ``--rounds`` rounds, the order reversed every round; each row gives the latency
percentiles over all its requests and the median images/s of its rounds.

``--batches``: the same ``Predictor.run`` on four copies of the image as one batch against
four calls of one image each, in turns (why the CPU default of ``--max-batch-size`` is 1).

    .venv/bin/python benchmarks/serve.py [--requests 24] [--clients 8] [--rounds 2]
    .venv/bin/python benchmarks/serve.py --batches [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BATCH_SIZES = (1, 4, 8)


def write_checkpoint(folder: Path) -> Path:
    import torch

    from vistra.inference.checkpoint import NETWORK_KEY, network_spec
    from vistra.inference.spec import PREPROCESS_KEY
    from vistra.models import DETR

    torch.manual_seed(0)
    network = DETR(91).eval()
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    preprocess = {"resize": "shorter_side", "size": 800, "max_size": 1333}
    torch.save({NETWORK_KEY: network_spec(network), "state_dict": state,
                PREPROCESS_KEY: preprocess}, folder / "detr.ckpt")  # fmt: skip
    return folder / "detr.ckpt"


def start_server(ckpt: Path, port: int, batch: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "vistra.cli", "serve", "--ckpt", str(ckpt), "--port",
               str(port), "--max-batch-size", str(batch), "--batch-timeout", "0.05"]  # fmt: skip
    with open(log, "wb") as stderr:
        return subprocess.Popen(command, stdout=stderr, stderr=stderr, start_new_session=True)


def wait_healthy(port: int, deadline: float = 180) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on {port} not healthy after {deadline} s")


def load(port: int, body: bytes, requests: int, clients: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` posts from ``clients`` threads, and the wall time."""
    latencies, lock, left = [], threading.Lock(), [requests]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "image/jpeg"})
            answer = connection.getresponse()
            payload = answer.read()
            if answer.status != 200:
                raise SystemExit(f"HTTP {answer.status}: {payload[:300]!r}")
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def loop(predictor, image, requests: int) -> tuple[list[float], float]:
    latencies = []
    start = time.perf_counter()
    for _ in range(requests):
        began = time.perf_counter()
        predictor(image)
        latencies.append(time.perf_counter() - began)
    return latencies, time.perf_counter() - start


def batches(predictor, image, rounds: int) -> None:
    """Seconds of one batch of 4 against 4 batches of 1, alternating which goes first."""
    predictor.run([image])  # warm-up
    times: dict[str, list[float]] = {"1 x 4": [], "4 x 1": []}
    for turn in range(rounds):
        order = ["1 x 4", "4 x 1"] if turn % 2 == 0 else ["4 x 1", "1 x 4"]
        for side in order:
            start = time.perf_counter()
            if side == "1 x 4":
                predictor.run([image] * 4)
            else:
                for _ in range(4):
                    predictor.run([image])
            times[side].append(time.perf_counter() - start)
    for side, seconds in times.items():
        print(f"{side}: " + ", ".join(f"{t:.2f} s" for t in seconds))


def row(name: str, latencies: list[float], rates: list[float]) -> str:
    p50, p95, p99 = (np.percentile(latencies, q) * 1000 for q in (50, 95, 99))
    return f"| {name} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {statistics.median(rates):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24, help="answers per side and round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", action="store_true", help="only the batch comparison")
    options = parser.parse_args()
    import sklearn

    from vistra.data.image_files import load_image
    from vistra.inference.predictor import Predictor

    photo = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    body = photo.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        ckpt = write_checkpoint(Path(folder))
        if options.batches:
            batches(Predictor.from_checkpoint(ckpt), load_image(photo), options.rounds)
            return
        ports = {batch: 8300 + batch for batch in BATCH_SIZES}
        servers = [start_server(ckpt, ports[b], b, Path(folder) / f"{b}.log") for b in BATCH_SIZES]
        try:
            for port in ports.values():
                wait_healthy(port)
            predictor = Predictor.from_checkpoint(ckpt)
            image = load_image(photo)
            predictor(image)  # warm-up, as every server had its first request below
            for port in ports.values():
                load(port, body, 2, 1)
            sides = ["loop", *BATCH_SIZES]
            latencies = {side: [] for side in sides}
            rates = {side: [] for side in sides}
            for turn in range(options.rounds):
                for side in sides if turn % 2 == 0 else sides[::-1]:
                    if side == "loop":
                        times, wall = loop(predictor, image, options.requests)
                    else:
                        times, wall = load(ports[side], body, options.requests, options.clients)
                    latencies[side] += times
                    rates[side].append(options.requests / wall)
                    print(f"round {turn + 1} {side}: {options.requests / wall:.2f} images/s",
                          file=sys.stderr)  # fmt: skip
        finally:
            for server in servers:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait()
    print(
        f"\n{options.clients} clients, {options.requests} requests per side and round, "
        f"{options.rounds} rounds\n"
    )
    print("| side | p50 ms | p95 ms | p99 ms | images/s |\n|---|---|---|---|---|")
    print(row("`Predictor` in a loop (one process, no HTTP)", latencies["loop"], rates["loop"]))
    for batch in BATCH_SIZES:
        print(row(f"`vistra serve --max-batch-size {batch}`", latencies[batch], rates[batch]))
    print(json.dumps({str(k): statistics.median(v) for k, v in rates.items()}))


if __name__ == "__main__":
    main()
