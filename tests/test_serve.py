"""``vistra serve`` as a user runs it (a subprocess on 127.0.0.1): the answers equal ``vistra
predict``'s files for every family; bad requests get their status and one-line JSON error and
the next good request succeeds; the key; a killed model worker is reported and replaced."""

from __future__ import annotations

import base64
import concurrent.futures
import csv
import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_files import build_checkpoints, write_scenes
from PIL import Image
from runner import run_vistra
from serve_process import serving, start, stop

FAMILIES = ["detection", "segmentation", "classification", "embedding"]
SIZES = [(96, 128), (120, 90), (70, 70)]  # landscape, portrait, square: padding in batches


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    checkpoints = build_checkpoints(root / "ckpt")
    # A confident first class and a lower overlap threshold (the checkpoint's post-processing
    # entry), so that the random network's panoptic answers hold segments.
    checkpoint = torch.load(checkpoints["segmentation"], weights_only=True)
    checkpoint["state_dict"]["network.decoder.class_embed.bias"][0] = 6.0
    checkpoint["vistra_postprocess"] = {"overlap_threshold": 0.3}
    torch.save(checkpoint, checkpoints["segmentation"])
    return {"ckpt": checkpoints, "images": write_scenes(root / "img", SIZES), "root": root}


@pytest.fixture(scope="module")
def servers(files) -> dict:
    """``vistra serve --ckpt CKPT`` with the README's defaults, one per family, started
    together."""
    started = {family: start(files["ckpt"][family], files["root"]) for family in FAMILIES}
    try:
        for server in started.values():
            server.wait_healthy()
        yield started
    finally:
        for server in started.values():
            stop(server)


def png_bytes(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def predict_files(files: dict, family: str, tmp_path: Path) -> Path:
    out = tmp_path / "predicted"
    result = run_vistra("predict", "--ckpt", files["ckpt"][family], "--input", files["images"],
                        "--output", out, "--batch-size", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def same_rows(served: list[dict], written: list[dict]) -> None:
    """The rows of a results file (without ``image_id``), served best first with names."""
    served = [{k: v for k, v in row.items() if k != "category_name"} for row in served]
    written = [{k: v for k, v in row.items() if k != "image_id"} for row in written]
    assert served == sorted(written, key=lambda row: -row["score"])


@pytest.mark.parametrize("family", FAMILIES)
def test_serve_answers_as_predict_writes(files, servers, family, tmp_path):
    """README: ``vistra serve --ckpt CKPT`` with its defaults, three images posted one way each
    (raw body, multipart form, base64 JSON) one after another, against ``vistra predict`` on
    the same images one at a time (``--batch-size 1``: Mask2Former's results change a little
    with the padding of a batch)."""
    out = predict_files(files, family, tmp_path)
    images = json.loads((out / "images.json").read_text())
    server = servers[family]
    status, info = server.call("/info")
    assert status == 200 and info["kind"] == family
    for entry in images:
        data = (files["images"] / entry["file_name"]).read_bytes()
        status, body = post_three_ways(server, data, entry["id"], "?maps=1")
        assert status == 200, body
        assert (body["width"], body["height"]) == (entry["width"], entry["height"])
        check_answer(family, body, entry, out)


def post_three_ways(server, data: bytes, index: int, query: str):
    """Raw image body, multipart form or JSON with base64, by ``index``."""
    if index % 3 == 0:
        return server.call(f"/predict{query}", data, "image/png")
    if index % 3 == 1:
        boundary = "vistra-test-boundary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + (
                f"\r\n--{boundary}--\r\n").encode()  # fmt: skip
        return server.call(f"/predict{query}", form, f"multipart/form-data; boundary={boundary}")
    payload = json.dumps({"image": base64.b64encode(data).decode()}).encode()
    return server.call(f"/predict{query}", payload, "application/json")


def check_answer(family: str, body: dict, entry: dict, out: Path) -> None:
    stem = Path(entry["file_name"]).stem
    if family == "detection":
        written = [r for r in json.loads((out / "detections.json").read_text())
                   if r["image_id"] == entry["id"]]  # fmt: skip
        same_rows(body["detections"], written)
        names = {1: "circle", 2: "square", 3: "triangle"}
        assert all(r["category_name"] == names[r["category_id"]] for r in body["detections"])
    elif family == "segmentation":
        panoptic = json.loads((out / "panoptic.json").read_text())["annotations"]
        segments = next(p["segments_info"] for p in panoptic if p["image_id"] == entry["id"])
        assert [{k: v for k, v in s.items() if k != "category_name"}
                for s in body["segments_info"]] == segments != []  # fmt: skip
        written = [r for r in json.loads((out / "instances.json").read_text())
                   if r["image_id"] == entry["id"]]  # fmt: skip
        same_rows(body["instances"], written)
        semantic = Image.open(io.BytesIO(base64.b64decode(body["semantic_png"])))
        expected = np.asarray(Image.open(out / "semantic" / f"{stem}.png"))
        assert np.array_equal(np.asarray(semantic), expected)
    elif family == "classification":
        with open(out / "classes.csv", newline="") as handle:
            row = next(r for r in csv.DictReader(handle) if r["file"] == entry["file_name"])
        assert (body["label"], body["name"]) == (int(row["label"]), row["name"])
        assert f"{body['score']:.5f}" == row["score"]
        assert len(body["top"]) == 5 and body["top"][0]["label"] == body["label"]
    else:
        embeddings = np.load(out / "embeddings.npy")
        assert np.array_equal(np.float32(body["embedding"]), embeddings[entry["id"] - 1])


def bad_requests(image: bytes) -> list[tuple[str, str, bytes, str, int, str]]:
    """(what, query, body, content type, status, a piece of the message) of each bad request."""
    bomb = png_bytes(Image.new("1", (14000, 14000)))  # 196 MP of one bit in a 25 kB PNG
    gif = png_bytes(Image.new("RGB", (8, 8)), "GIF")
    form = "multipart/form-data; boundary=b"
    return [
        ("not an image", "", b"hello, world", "application/octet-stream", 400, "not an image"),
        ("truncated", "", image[: len(image) // 2], "image/png", 400, "cannot read image"),
        ("bomb", "", bomb, "image/png", 422, "over the limit of 178956970 pixels"),
        ("GIF", "", gif, "image/gif", 415, "a GIF image; vistra reads"),
        ("text", "", b"x=1", "text/plain", 415, "Content-Type text/plain is not accepted"),
        ("bad JSON", "", b'{"image": ', "application/json", 400, "not valid JSON"),
        ("bad base64", "", b'{"image": "***"}', "application/json", 400, "not valid base64"),
        (
            "no file",
            "",
            b'--b\r\nContent-Disposition: form-data; name="threshold"\r\n\r\n0.5\r\n--b--\r\n',
            form,
            400,
            "no file in the field 'image'",
        ),
        ("bad form", "", b"--b\r\n\r\n--b--\r\n", form, 400, "unreadable multipart form"),
        ("bad option", "?top_k=zero", image, "image/png", 400, "top_k='zero' is not a int"),
        ("unknown option", "?file=/etc/passwd", image, "image/png", 400, "unknown option"),
    ]


def test_bad_requests_key_timeout_and_a_killed_worker(files, tmp_path):
    """A server reachable from other machines (0.0.0.0, so it needs a key), a small body limit,
    a short queue timeout and batches of 4 (documented options): every bad request gets its
    status and one-line error and the next good request succeeds; concurrent requests are
    batched and answered each with its own result; without the key 401 (but /health); a burst
    beyond the timeout gets 504s; ``kill -9`` of the model worker is reported by /health and
    the service recovers."""
    image = (files["images"] / "scene0.png").read_bytes()
    options = ("--host", "0.0.0.0", "--max-body-mb", "0.05", "--timeout", "0.3",
               "--max-batch-size", "4")  # fmt: skip
    with serving(files["ckpt"]["detection"], tmp_path, *options, key="k3y") as server:
        for what, query, body, kind, status, message in bad_requests(image):
            got, answer = server.call(f"/predict{query}", body, kind)
            assert (got, list(answer)) == (status, ["error"]), (what, answer)
            assert message in answer["error"] and "\n" not in answer["error"], (what, answer)
            assert server.call("/predict", image, "image/png")[0] == 200, what
        check_body_limit(server, image)
        check_batched_answers(server, files["images"])
        assert server.call("/info", headers={"X-API-Key": "wrong"})[0] == 401
        assert server.call("/health", headers={"X-API-Key": ""})[0] == 200
        assert server.call("/info", headers={"Authorization": "Bearer k3y"})[0] == 200
        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            statuses = list(pool.map(lambda _: server.call("/predict", image, "image/png"),
                                     range(96)))  # fmt: skip
        timed_out = [body for status, body in statuses if status == 504]
        assert timed_out and timed_out[0] == {"error": "Request timed out"}
        assert {status for status, _ in statuses} <= {200, 504}
        assert server.call("/predict", image, "image/png")[0] == 200
        check_killed_worker_replaced(server, image)


def check_batched_answers(server, folder: Path) -> None:
    """Images of three sizes posted at once, four times each, come back batched (padded
    together) with the answers each gets alone: DETR masks the padding."""
    posts = [(folder / f"scene{k}.png").read_bytes() for k in range(len(SIZES))]
    alone = [server.call("/predict", data, "image/png")[1]["detections"] for data in posts]
    # README's options: threshold and top_k keep the best rows of the whole answer
    status, body = server.call("/predict?threshold=0.5&top_k=2", posts[0], "image/png")
    assert body["detections"] == [r for r in alone[0] if r["score"] >= 0.5][:2] != []
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda k: server.call("/predict", posts[k % 3], "image/png"),
                                range(12)))  # fmt: skip
    for k, (status, body) in enumerate(answers):
        assert status == 200, body
        for got, expected in zip(body["detections"], alone[k % 3], strict=True):
            assert got["category_id"] == expected["category_id"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
            assert got["bbox"] == pytest.approx(expected["bbox"], abs=0.1)


def check_body_limit(server, image: bytes) -> None:
    """413 for a declared length over the limit before any of the body is sent, and for a
    chunked body once it passes the limit; then a good request."""
    status, body = server.raw("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png"
                              "\r\nContent-Length: 1000000000")  # fmt: skip
    assert (status, body) == (413, {"error": "the body of 1000000000 bytes is over the limit of "
                                    "52428 (vistra serve --max-body-mb)"})  # fmt: skip
    chunk = b"%x\r\n%s\r\n" % (len(image), image)
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png"
    status, body = server.raw(f"{head}\r\nTransfer-Encoding: chunked",
                              chunk * (60_000 // len(image) + 1))  # fmt: skip
    assert (status, body) == (413, {"error": "the body is over the limit of 52428 bytes "
                                    "(vistra serve --max-body-mb)"})  # fmt: skip
    assert server.call("/predict", image, "image/png")[0] == 200


def check_killed_worker_replaced(server, image: bytes) -> None:
    (worker,) = server.workers()
    os.kill(worker, signal.SIGKILL)
    seen, end = [], time.monotonic() + 60
    while time.monotonic() < end:
        status, body = server.call("/health")
        seen.append((status, body.get("status")))
        if status == 200 and body["restarts"] == 1:
            break
        time.sleep(0.1)
    assert (503, "restarting") in seen, seen[-5:]
    assert seen[-1] == (200, "ok"), server.log()
    assert "model worker 0 died; starting a new one" in server.log()
    assert server.call("/predict", image, "image/png")[0] == 200


def test_serve_refuses_in_one_line(files, tmp_path):
    """A non-loopback address without a key; a checkpoint that is not one; a port in use."""
    ckpt = files["ckpt"]["detection"]
    result = run_vistra("serve", "--ckpt", ckpt, "--host", "0.0.0.0", cwd=tmp_path,
                        env={"VISTRA_API_KEY": ""})  # fmt: skip
    assert result.returncode == 2
    assert "--host 0.0.0.0 accepts connections from other machines" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "not.ckpt").write_bytes(b"junk")
    result = run_vistra("serve", "--ckpt", tmp_path / "not.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "not.ckpt" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


CHROMIUM = Path("/usr/bin/chromium")
# As the machine's notes advise for a closed network: no background connections, no sandbox
# (root), a fresh profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                    "(.ci/run installs it: apt-get install chromium)")  # fmt: skip
@pytest.mark.parametrize("family", ["detection", "segmentation"])
def test_page_in_chromium(servers, family, tmp_path):
    """The page at / in headless Chromium (Playwright drives it): a real photo (scikit-learn's
    china.jpg) picked in the file chooser comes back drawn, with the table of what was found;
    the screenshot goes to test-artifacts/."""
    import sklearn
    from playwright.sync_api import sync_playwright

    photo = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    server = servers[family]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('model')")
        assert page.text_content("#model").startswith(f"{family} model")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#picture:not([hidden])", timeout=60_000)
        status = page.text_content("#status")
        assert status.startswith("china.jpg: 640 x 427"), status
        rows = page.locator("#found tbody tr").count()
        width = page.evaluate("document.getElementById('picture').naturalWidth")
        artifacts = Path(os.environ.get("VISTRA_TEST_ARTIFACTS", "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / f"serve-page-{family}.png"), full_page=True)
        browser.close()
    _, body = server.call("/predict?picture=1&threshold=0.5", photo.read_bytes(), "image/jpeg")
    drawn = Image.open(io.BytesIO(base64.b64decode(body["picture_png"])))
    assert width == drawn.width  # the picture shown is the one the server drew
    found = body["detections"] if family == "detection" else body["segments_info"]
    assert rows == len(found) > 0
