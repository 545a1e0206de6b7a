"""``vistra serve --ckpt CKPT|model.onnx [options]``: the command line, its checks (each a
line, before any worker starts) and the start of the server."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import asdict
from pathlib import Path

from vistra.inference.command import UNSAFE_HELP, fail

LOOPBACK = ("127.0.0.1", "localhost")
HOSTS = (*LOOPBACK, "0.0.0.0", "::")  # the addresses LitServe binds
KEY_VARIABLE = "VISTRA_API_KEY"


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vistra serve",
        description="A model behind HTTP: POST /predict, GET /info, GET /health, a page at /.",
    )
    parser.add_argument("--ckpt", required=True, help="vistra checkpoint (.ckpt), .onnx file "
                        "or Hugging Face id / save_pretrained folder (local cache)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", choices=HOSTS, help="address to listen "
                        "on (default: this machine only; another needs --api-key)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help=f"required on every request but /health (default: "
                        f"${KEY_VARIABLE})")  # fmt: skip
    parser.add_argument("--workers-per-device", type=int, default=1,
                        help="model workers (processes) per device")  # fmt: skip
    parser.add_argument("--max-batch-size", type=int, help="requests run together in one "
                        "forward pass (default: 1 on the CPU, where a batch is slower per image "
                        "than one image at a time; 4 on a GPU)")  # fmt: skip
    parser.add_argument("--batch-timeout", type=float, default=0.01,
                        help="seconds a batch waits to fill")  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    parser.add_argument("--devices", type=int, default=1, help="GPUs to use (--device cuda)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="bf16 / fp16 run under autocast")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may "
                        "wait for a worker before it is answered 504")  # fmt: skip
    parser.add_argument("--max-body-mb", type=float, default=20.0,
                        help="largest request body, in MiB (413 above)")  # fmt: skip
    parser.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    return parser


def serve_command(words: list[str]) -> int:
    options = serve_parser().parse_args(words)
    key = options.api_key or os.environ.get(KEY_VARIABLE) or None
    if options.max_batch_size is None:
        options.max_batch_size = 1 if options.device == "cpu" else 4
    problem = _problem(options, key)
    if problem:
        return fail("serve", problem)
    try:
        import litserve  # noqa: F401
    except ImportError:
        return fail("serve", "LitServe is missing: pip install 'vistra[serve]'")
    from vistra.inference.predictor import Predictor

    try:  # loaded here once, so that a bad file is one line before any worker starts
        predictor = Predictor.load(options.ckpt, "cpu", options.precision,
                                   options.unsafe_load or None)  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        return fail("serve", error)
    info = describe(predictor, options)
    del predictor
    from vistra.serve.api import VistraAPI
    from vistra.serve.app import build_server

    api = VistraAPI(options.ckpt, options.precision, options.unsafe_load,
                    options.max_batch_size, options.batch_timeout)  # fmt: skip
    options.host = "127.0.0.1" if options.host == "localhost" else options.host
    server = build_server(api, info, options, key)
    server.run(host=options.host, port=options.port, generate_client_file=False,
               log_level="warning")  # fmt: skip
    return 0


def _problem(options, key: str | None) -> str | None:
    """Why the command cannot start, in one line."""
    if options.host not in LOOPBACK and not key:
        return (f"--host {options.host} accepts connections from other machines: give "
                f"--api-key KEY (or set {KEY_VARIABLE}) so that only holders of the key can use "
                "the model")  # fmt: skip
    for name in ("workers_per_device", "max_batch_size", "devices"):
        if getattr(options, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}"
    if not 0 <= options.batch_timeout < options.timeout:
        return (f"--batch-timeout must be at least 0 and less than --timeout "
                f"({options.timeout}), got {options.batch_timeout}")  # fmt: skip
    if not options.max_body_mb > 0:
        return f"--max-body-mb must be positive, got {options.max_body_mb}"
    if not 1024 <= options.port <= 65535:
        return f"--port must be from 1024 to 65535, got {options.port}"
    if options.device != "cpu" and options.ckpt.endswith(".onnx"):
        return "an .onnx file runs on the CPU (onnxruntime's CPU provider): leave out --device"
    if options.device == "cuda":
        import torch

        if torch.cuda.device_count() < options.devices:
            return (f"--device cuda --devices {options.devices}: this machine has "
                    f"{torch.cuda.device_count()} usable GPU(s)")  # fmt: skip
    return _port_taken(options.host, options.port)


def _port_taken(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return f"cannot listen on {host}:{port} ({error.strerror}; another --port?)"
    return None


def describe(predictor, options) -> dict:
    """What ``GET /info`` says: the model's kind, categories, preprocessing and thresholds,
    the vistra version that wrote the file, and how the server runs it."""
    spec = predictor.spec
    names = spec.names or []
    ids = spec.category_ids or list(range(len(names)))
    things = set(spec.thing_labels or [])
    categories = [{"id": ids[k], "name": name, **({"isthing": k in things} if spec.thing_labels
                   is not None else {})} for k, name in enumerate(names)]  # fmt: skip
    return {
        "kind": spec.kind,
        "model": Path(str(options.ckpt)).name,
        "categories": categories,
        "preprocess": spec.preprocess.to_dict(),
        "thresholds": asdict(spec.thresholds),
        "vistra_version": spec.version,
        "options": ["threshold", "top_k", "picture", "maps"],
        "server": {
            "max_batch_size": options.max_batch_size,
            "workers": options.workers_per_device * options.devices,
            "max_body_bytes": int(options.max_body_mb * 2**20),
            "timeout": options.timeout,
            "device": options.device,
        },  # fmt: skip
    }
