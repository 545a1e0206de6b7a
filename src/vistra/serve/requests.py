"""Reading a ``POST /predict`` in the HTTP process, before anything reaches a model worker.

A body is an image file (``image/*`` or ``application/octet-stream``), a multipart form with
the file in the field ``image``, or JSON ``{"image": "<base64>", ...}``; options come as
query parameters, form fields or JSON members. The body is refused over its size limit
before it is read further (413), and the image is decoded here once, so that a request that
is not an image (400), not a format vistra reads (415) or over the pixel limit (422) is
answered at once and never fails a batch of good ones in a worker.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from vistra.data.image_files import (
    ImageLoadError,
    ImageTooLarge,
    UnsupportedImage,
    decode_image,
)

# What a request may set, and how each is read.
OPTIONS = {"threshold": float, "top_k": int, "picture": bool, "maps": bool}
JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data",)
RAW_TYPES = ("", "application/octet-stream")


async def read_predict_request(request: Request) -> dict:
    """``{"image": bytes, **options}`` of one request, checked (``HTTPException`` otherwise)."""
    limit = request.app.state.max_body_bytes
    body = await _body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    given = dict(request.query_params)
    if kind in JSON_TYPES:
        image, fields = _from_json(body)
    elif kind in FORM_TYPES:
        image, fields = await _from_form(request, body)
    elif kind in RAW_TYPES or kind.startswith("image/"):
        image, fields = body, {}
    else:
        raise HTTPException(415, f"Content-Type {kind} is not accepted: send an image file, "
                            "a multipart form with the field 'image', or JSON with a base64 "
                            "'image'")  # fmt: skip
    if not image:
        raise HTTPException(400, "the request holds no image (an empty body or field)")
    options = read_options({**given, **fields})
    await run_in_threadpool(check_image, image)
    return {"image": image, **options}


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body of {int(declared)} bytes is over the limit of {limit} "
                            "(vistra serve --max-body-mb)")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body is over the limit of {limit} bytes "
                                "(vistra serve --max-body-mb)")  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks)


def _from_json(body: bytes) -> tuple[bytes, dict]:
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise HTTPException(400, f"the body is not valid JSON ({_first_line(error)})") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("image"), str):
        raise HTTPException(400, 'JSON bodies are {"image": "<base64 of an image file>", ...}')
    text = fields.pop("image")
    if text.startswith("data:") and "," in text:  # a data URL, as a browser gives it
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True), fields
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f"'image' is not valid base64 ({error})") from None


async def _from_form(request: Request, body: bytes) -> tuple[bytes, dict]:
    async def replay() -> dict:  # the body read above, given again to the form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(OPTIONS))
    except Exception as error:  # noqa: BLE001 - the parser's own types; the client's fault
        raise HTTPException(400, f"unreadable multipart form ({_first_line(error)})") from None
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "the multipart form has no file in the field 'image'")
    data = await upload.read()
    fields = {key: value for key, value in form.items() if key != "image"}
    return data, fields


def read_options(given: dict) -> dict:
    """The request's options, typed; an unknown name or a bad value is a 400."""
    options = {}
    for key, value in given.items():
        if key not in OPTIONS:
            raise HTTPException(400, f"unknown option {key!r} (options: {', '.join(OPTIONS)})")
        options[key] = _typed(key, value)
    if options.get("top_k") is not None and options["top_k"] < 1:
        raise HTTPException(400, f"top_k must be at least 1, got {options['top_k']}")
    return options


def _typed(key: str, value):
    kind = OPTIONS[key]
    text = str(value).strip().lower()
    if kind is bool:
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
    else:
        try:
            number = kind(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is not None and number == number and abs(number) != float("inf"):
            return number
    raise HTTPException(400, f"option {key}={str(value)[:40]!r} is not a {kind.__name__}")


def check_image(data: bytes) -> None:
    """Decode the image as a worker will (so the worker cannot fail on it)."""
    try:
        decode_image(data)
    except ImageTooLarge as error:
        raise HTTPException(422, str(error)) from None
    except UnsupportedImage as error:
        raise HTTPException(415, str(error)) from None
    except ImageLoadError as error:
        raise HTTPException(400, str(error)) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
