"""An onnxruntime client of a vistra ONNX file written from the README's "The ONNX file" alone:
numpy, Pillow and onnxruntime, nothing of vistra. ``tests/test_onnx_contract.py`` holds its
results equal to ``vistra predict``'s."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime
from PIL import Image, ImageOps


class Client:
    def __init__(self, path) -> None:
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map["vistra"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def prepare(self, image: Image.Image) -> np.ndarray:
        pre = self.meta["preprocess"]
        image = ImageOps.exif_transpose(image).convert("RGB")
        width, height = image.size
        short, long = min(height, width), max(height, width)
        size, max_size = pre["size"], pre.get("max_size")
        new_short, new_long = size, math.floor(size * long / short)
        if pre["resize"] == "shorter_side" and max_size is not None:
            if max_size <= size:
                new_short, new_long = math.floor(max_size * short / long), max_size
            elif new_long > max_size:
                new_short, new_long = math.floor(max_size * new_short / new_long), max_size
        new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
        image = image.resize((new_w, new_h), Image.BILINEAR)
        if pre["resize"] == "center_crop":
            top, left = round((new_h - size) / 2), round((new_w - size) / 2)
            image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32) / 255
        pixels = (pixels - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
        return pixels.transpose(2, 0, 1).astype(np.float32)

    def batch(self, arrays: list[np.ndarray]):
        multiple = self.meta["preprocess"].get("pad_multiple", 1)
        height = -(-max(a.shape[1] for a in arrays) // multiple) * multiple
        width = -(-max(a.shape[2] for a in arrays) // multiple) * multiple
        images = np.zeros((len(arrays), 3, height, width), np.float32)
        mask = np.zeros((len(arrays), height, width), bool)
        for k, a in enumerate(arrays):
            images[k, :, : a.shape[1], : a.shape[2]] = a
            mask[k, : a.shape[1], : a.shape[2]] = True
        feed = {"images": images, "pixel_mask": mask}
        return {name: feed[name] for name in self.inputs}

    def __call__(self, pictures: list[Image.Image]) -> list[dict]:
        arrays = [self.prepare(p) for p in pictures]
        feed = self.batch(arrays)
        outputs = self.session.run(None, feed)
        kind = self.meta["kind"]
        padded = feed["images"].shape[-2:]
        results = []
        for k, picture in enumerate(pictures):
            if kind == "classification":
                p = softmax(outputs[0][k])
                results.append({"label": int(p.argmax()), "scores": p})
            elif kind == "detection":
                results.append(self.detections(outputs[0][k], outputs[1][k], picture))
            else:
                results.append(self.segmentation(outputs[0][k], outputs[1][k], padded,
                                                 arrays[k].shape[-2:], picture))  # fmt: skip
        return results

    def detections(self, logits, boxes, picture) -> dict:
        p = softmax(logits)[:, :-1]
        cx, cy, w, h = boxes.T
        scale = np.array([picture.width, picture.height] * 2, np.float32)
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * scale
        return {"scores": p.max(1), "labels": p.argmax(1), "boxes": xyxy}

    def segmentation(self, logits, mask_logits, padded, own, picture) -> dict:
        height, width = picture.height, picture.width
        if height * width > 2048 * 2048:
            s = math.sqrt(2048 * 2048 / (height * width))
            height, width = math.floor(height * s), math.floor(width * s)
        masks = np.stack([bilinear(m, *padded) for m in mask_logits])
        masks = masks[:, : own[0], : own[1]]
        masks = np.stack([bilinear(m, height, width) for m in masks])
        p = softmax(logits)[:, :-1]
        with np.errstate(over="ignore"):
            m = 1 / (1 + np.exp(-masks))
        semantic = np.einsum("qc,qhw->chw", p, m).argmax(0)
        result = {"semantic": semantic}
        things = self.meta.get("thing_labels") or []
        if things:
            allowed = np.full(p.shape, -1.0)
            allowed[:, things] = p[:, things]
            flat = allowed.ravel()
            top = np.argsort(-flat, kind="stable")[: self.meta["thresholds"]["top_k"]]
            top = top[flat[top] >= 0]
            queries, labels = top // p.shape[1], top % p.shape[1]
            binary = masks[queries] > 0
            inside = (m[queries] * binary).sum((1, 2)) / (binary.sum((1, 2)) + 1e-6)
            scores = flat[top] * inside
            order = np.argsort(-scores, kind="stable")
            result["instances"] = {"scores": scores[order], "labels": labels[order],
                                   "masks": binary[order]}  # fmt: skip
        return result


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def bilinear(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[h, w] -> [rows, cols]: each output pixel samples (i + 0.5) * in / out - 0.5, clamped
    at 0, between its two neighbours."""
    for axis, out in ((0, rows), (1, cols)):
        size = values.shape[axis]
        position = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0)
        low = np.minimum(np.floor(position).astype(int), size - 1)
        high = np.minimum(low + 1, size - 1)
        t = position - low
        a, b = np.take(values, low, axis), np.take(values, high, axis)
        t = t[:, None] if axis == 0 else t[None, :]
        values = a * (1 - t) + b * t
    return values
