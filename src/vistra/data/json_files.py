"""Reading an annotation or index file as JSON, every way it can fail named in one line."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from vistra.data.image_files import DataError


class JsonFileError(DataError):
    """A JSON file that cannot be read: ``where`` in the file (``"file"`` or ``"line L column
    C"``) and the ``reason`` (with the parser's ``detail``); the message says all of it."""

    def __init__(self, path: Path, reason: str, where: str = "file", detail: str = "") -> None:
        at = "" if where == "file" else f" at {where}"
        tail = f": {detail}" if detail else ""
        super().__init__(f"{path}: {reason}{at}{tail}")
        self.where, self.reason = where, f"{reason}{tail}"


# Byte-order marks of the encodings other tools write JSON in, longest first.
MARKS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]  # fmt: skip


def read_json(path: str | Path):
    """The JSON value in ``path`` (UTF-8). ``JsonFileError`` naming the file: another encoding
    (pycocotools and the COCO tools read UTF-8), malformed JSON (line and column), nesting too
    deep for a reader; ``FileNotFoundError`` if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    data = path.read_bytes()
    for mark, name in MARKS:
        if data.startswith(mark):
            raise JsonFileError(path, f"{name} text; save it as UTF-8 (pycocotools and the "
                                "COCO tools read UTF-8)")  # fmt: skip
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JsonFileError(
            path, f"not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise JsonFileError(path, "malformed JSON", where, error.msg) from None
    except RecursionError:
        raise JsonFileError(
            path, "JSON nested too deeply to read (no annotation file is)"
        ) from None
