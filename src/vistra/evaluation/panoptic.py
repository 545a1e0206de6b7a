"""Panoptic quality (Kirillov et al. 2019) with the COCO panoptic rules.

A predicted and a ground-truth segment of the same category match when their IoU exceeds
0.5, where the union leaves out the prediction's overlap with void pixels (unlabelled ground
truth). An unmatched prediction counts as a false positive unless more than half of it lies on
void or on crowd regions of its category. Unmatched non-crowd ground truth counts as a false
negative. PQ = sum IoU(TP) / (TP + FP/2 + FN/2) per category, averaged over the categories that
occur (TP + FP + FN > 0); SQ and RQ split it into mean matched IoU and an F1 score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vistra.data.segment import Segment

VOID = 0
OFFSET = 1 << 32


@dataclass
class CategoryCounts:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


@dataclass
class PanopticQuality:
    """Accumulates PQ counts image by image; ``compute()`` gives all / things / stuff numbers.

    Args:
        things, stuff: category ids of each kind (others found in the data raise an error).
    """

    things: set[int]
    stuff: set[int]
    counts: dict[int, CategoryCounts] = field(default_factory=dict)

    def update(
        self,
        pred_map: np.ndarray,
        pred_segments: list[Segment],
        gt_map: np.ndarray,
        gt_segments: list[Segment],
    ) -> None:
        """Add one image: segment-id maps [H, W] (0 = void / nothing) with their segments."""
        if pred_map.shape != gt_map.shape:
            raise ValueError(f"prediction {pred_map.shape} and ground truth {gt_map.shape} differ")
        known = self.things | self.stuff
        for segment in (*pred_segments, *gt_segments):
            if segment.category not in known:
                raise ValueError(f"segment {segment.id}: unknown category {segment.category}")
        gt_by_id = {s.id: s for s in gt_segments}
        pred_by_id = {s.id: s for s in pred_segments}
        pred_map, gt_map = pred_map.astype(np.int64), gt_map.astype(np.int64)
        gt_area = _areas(gt_map)
        pred_area = _areas(pred_map)
        pairs, pair_area = np.unique(gt_map * OFFSET + pred_map, return_counts=True)
        intersections = {(int(p // OFFSET), int(p % OFFSET)): int(a)
                         for p, a in zip(pairs, pair_area)}  # fmt: skip

        matched_gt, matched_pred = set(), set()
        for (gt_id, pred_id), inter in intersections.items():
            if gt_id not in gt_by_id or pred_id not in pred_by_id:
                continue
            gt, pred = gt_by_id[gt_id], pred_by_id[pred_id]
            if gt.iscrowd or gt.category != pred.category:
                continue
            void_overlap = intersections.get((VOID, pred_id), 0)
            union = pred_area[pred_id] + gt_area[gt_id] - inter - void_overlap
            iou = inter / union
            if iou > 0.5:
                counts = self.counts.setdefault(gt.category, CategoryCounts())
                counts.tp += 1
                counts.iou += iou
                matched_gt.add(gt_id)
                matched_pred.add(pred_id)

        crowd_of_category = {s.category: s.id for s in gt_segments if s.iscrowd}
        for gt in gt_segments:
            if gt.id not in matched_gt and not gt.iscrowd:
                self.counts.setdefault(gt.category, CategoryCounts()).fn += 1
        for pred in pred_segments:
            if pred.id in matched_pred or pred.id not in pred_area:
                continue
            ignored = intersections.get((VOID, pred.id), 0)
            if pred.category in crowd_of_category:
                ignored += intersections.get((crowd_of_category[pred.category], pred.id), 0)
            if ignored / pred_area[pred.id] > 0.5:
                continue
            self.counts.setdefault(pred.category, CategoryCounts()).fp += 1

    def compute(self) -> dict[str, float]:
        """``{"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}`` in 0..1
        (NaN when a group has no category with any segment)."""
        results = {}
        for suffix, group in (("", self.things | self.stuff), ("_th", self.things),
                              ("_st", self.stuff)):  # fmt: skip
            pq, sq, rq = [], [], []
            for category in group:
                c = self.counts.get(category)
                if c is None or c.tp + c.fp + c.fn == 0:
                    continue
                denominator = c.tp + 0.5 * c.fp + 0.5 * c.fn
                pq.append(c.iou / denominator)
                sq.append(c.iou / c.tp if c.tp else 0.0)
                rq.append(c.tp / denominator)
            for name, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                results[name + suffix] = float(np.mean(values)) if values else float("nan")
        return results

    def table(self) -> str:
        """The panopticapi-style summary: PQ / SQ / RQ and category count per group."""
        results = self.compute()
        lines = [f"{'':>8} {'PQ':>6} {'SQ':>6} {'RQ':>6}  categories"]
        for label, suffix, group in (("All", "", self.things | self.stuff),
                                     ("Things", "_th", self.things),
                                     ("Stuff", "_st", self.stuff)):  # fmt: skip
            count = sum(1 for c in group if c in self.counts)
            lines.append(f"{label:>8} {100 * results['PQ' + suffix]:6.1f} "
                         f"{100 * results['SQ' + suffix]:6.1f} "
                         f"{100 * results['RQ' + suffix]:6.1f}  {count}")  # fmt: skip
        return "\n".join(lines)


def _areas(segment_map: np.ndarray) -> dict[int, int]:
    ids, areas = np.unique(segment_map, return_counts=True)
    return {int(i): int(a) for i, a in zip(ids, areas)}


def merge_counts(per_rank: list[dict[int, CategoryCounts]]) -> dict[int, CategoryCounts]:
    """PQ counts of several processes (each rank's ``PanopticQuality.counts``) added up per
    category: PQ over the union of their images."""
    merged: dict[int, CategoryCounts] = {}
    for counts in per_rank:
        for category, c in counts.items():
            total = merged.setdefault(category, CategoryCounts())
            total.iou, total.tp = total.iou + c.iou, total.tp + c.tp
            total.fp, total.fn = total.fp + c.fp, total.fn + c.fn
    return merged
