"""The model worker of ``vistra serve``: a LitServe ``LitAPI`` around ``vistra.Predictor``.

LitServe starts one per device and ``--workers-per-device``, each in its own process, and
hands it requests singly or in batches of up to ``--max-batch-size``. The requests were read
and their images checked in the HTTP process (``vistra.serve.requests``).
"""

# No ``from __future__ import annotations``: LitServe gives FastAPI ``decode_request``'s
# annotation as it is, and FastAPI needs the object (the ``Depends``), not its text.
from typing import Annotated

import litserve
from fastapi import Depends, HTTPException

from vistra.serve.requests import read_predict_request


class VistraAPI(litserve.LitAPI):
    """Answers ``POST /predict`` with a ``Predictor`` loaded from ``source`` in each worker.

    Args:
        source: a vistra checkpoint, an ``.onnx`` file or a Hugging Face id / folder.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        unsafe_load: read a checkpoint that holds more than tensors (trusted files only).
        max_batch_size, batch_timeout: LitServe's batching (a batch waits at most
            ``batch_timeout`` seconds to fill).
    """

    def __init__(self, source: str, precision: str = "fp32", unsafe_load: bool = False,
                 max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:  # fmt: skip
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         api_path="/predict")  # fmt: skip
        self.source, self.precision, self.unsafe_load = source, precision, unsafe_load

    def setup(self, device: str) -> None:
        from vistra.inference.predictor import Predictor

        self.predictor = Predictor.load(self.source, device, self.precision,
                                        self.unsafe_load or None)  # fmt: skip

    def decode_request(self, request: Annotated[dict, Depends(read_predict_request)]) -> dict:
        from vistra.data.image_files import decode_image

        return {**request, "image": decode_image(request["image"])}

    def batch(self, inputs: list[dict]) -> list[dict]:
        return list(inputs)

    def predict(self, requests):
        """One request (no batching) or a list; each paired with its result."""
        from vistra.inference.results import finite

        single = isinstance(requests, dict)
        items = [requests] if single else requests
        results = self.predictor.run([item["image"] for item in items])
        if not all(finite(result) for result in results):
            raise HTTPException(500, "the model's outputs are not finite (NaN or infinite: a "
                                "diverged checkpoint?)")  # fmt: skip
        pairs = list(zip(items, results))
        return pairs[0] if single else pairs

    def unbatch(self, output: list) -> list:
        return list(output)

    def encode_response(self, output) -> dict:
        from vistra.serve.answer import answer

        request, result = output
        options = {key: value for key, value in request.items() if key != "image"}
        return answer(self.predictor.spec, request["image"], result, options)
