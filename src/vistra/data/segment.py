"""The record of one segment of a panoptic map, shared by the data that reads it and the
metric that scores it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Segment:
    """One segment of a panoptic map: its id in the map, category and crowd flag."""

    id: int
    category: int
    iscrowd: bool = False
