"""Mask2Former: point-sampled loss, training step and deformable attention, side by side.

1. The loss on K = 12544 uncertainty-sampled points (vistra's ``MaskSetCriterion``) against the
   same matching + BCE + dice on full-resolution masks (MaskFormer's way: predictions
   upsampled to the 512 x 512 targets): 100 queries, 1/4-resolution mask logits, batch 2,
   20 objects per image, 10 predictions (final + 9 auxiliary); time and peak memory of
   forward + backward.
2. The training step (forward, loss, backward, AdamW) of vistra's Mask2Former against Hugging
   Face's ``Mask2FormerForUniversalSegmentation`` with the same timm ResNet-50 module as
   backbone and the same random weights, 384 x 384, batch 2, float32 and bf16 autocast.
3. Multi-scale deformable attention forward + backward against the peer's function.
5. The Swin-T backbone forward (vistra's ``SwinFeatures``, the original windowing) against
   Hugging Face's ``SwinBackbone`` with the same weights, 512 x 512 (maps that are not window
   multiples: every stage padded), batch 1, float32 inference; outputs equal to 1e-5.
4. Components: each of vistra's faster forms (matcher BCE cost, deformable attention, unsorted
   top-k, and the set loss they sit in) against the form the peer uses, at the step's sizes.

Timing: the two sides of each comparison take turns (A B, B A, ... 8 rounds for the step), and
the ratio reported is the median of the per-round ratios, with their range: on a shared
2-core machine separate medians drifted by up to 2x between runs.

Run: .venv/bin/python benchmarks/mask2former.py [--loss] [--step] [--attention] [--components]
[--swin]
(default: all)
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    interleaved_seconds,
    median,
    peak_memory_mib,
    release_freed_memory,
    report_peak,
    round_ratios,
    table,
)

from vistra.convert.mask2former import mask2former_state_dict_from_hf  # noqa: E402
from vistra.losses import MaskHungarianMatcher, MaskSetCriterion  # noqa: E402
from vistra.losses.mask_losses import dice_loss, sigmoid_ce_loss  # noqa: E402
from vistra.losses.mask_matcher import pairwise_dice, pairwise_sigmoid_ce  # noqa: E402
from vistra.models import Mask2Former  # noqa: E402
from vistra.models.layers.ms_deform_attn import multi_scale_deformable_attention  # noqa: E402

QUERIES, CLASSES, OBJECTS, LOSS_IMAGE, STEP_IMAGE, BATCH = 100, 133, 20, 512, 384, 2


class FullMaskCriterion(MaskSetCriterion):
    """The same matching and losses on every pixel of full-resolution masks (the reference)."""

    def layer_terms(self, outputs, targets, num_masks, log_extras):
        size = targets[0]["masks"].shape[-2:]
        upsampled = F.interpolate(outputs["pred_masks"], size=size, mode="bilinear",
                                  align_corners=False)  # fmt: skip
        matches = []
        with torch.no_grad():
            for image, target in enumerate(targets):
                probabilities = outputs["pred_logits"][image].softmax(-1)
                predicted = upsampled[image].flatten(1)
                truth = target["masks"].flatten(1).float()
                cost = (-self.matcher.cost_class * probabilities[:, target["labels"]]
                        + self.matcher.cost_mask * pairwise_sigmoid_ce(predicted, truth)
                        + self.matcher.cost_dice * pairwise_dice(predicted, truth))  # fmt: skip
                rows, cols = linear_sum_assignment(cost.numpy())
                matches.append((torch.as_tensor(rows), torch.as_tensor(cols)))
        batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)])
        query_index = torch.cat([q for q, _ in matches])
        predicted = upsampled[batch_index, query_index].flatten(1)
        truth = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, matches)]).flatten(1)
        target_classes = torch.full(outputs["pred_logits"].shape[:2], self.num_classes)
        target_classes[batch_index, query_index] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, matches)]
        )
        return {
            "loss_ce": F.cross_entropy(outputs["pred_logits"].transpose(1, 2), target_classes,
                                       self.class_weight),
            "loss_mask": sigmoid_ce_loss(predicted, truth, num_masks),
            "loss_dice": dice_loss(predicted, truth, num_masks),
        }  # fmt: skip


def random_predictions(generator: torch.Generator, side: int) -> dict:
    """Random class and mask logits ([B, Q, side, side]) for the final and 9 auxiliary
    predictions, with gradients."""

    def prediction():
        return {"pred_logits": torch.randn(BATCH, QUERIES, CLASSES + 1, generator=generator,
                                           requires_grad=True),
                "pred_masks": torch.randn(BATCH, QUERIES, side, side, generator=generator,
                                          requires_grad=True)}  # fmt: skip

    outputs = prediction()
    outputs["aux_outputs"] = [prediction() for _ in range(9)]
    return outputs


def loss_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    outputs = random_predictions(generator, LOSS_IMAGE // 4)
    targets = []
    for _ in range(BATCH):
        masks = torch.zeros(OBJECTS, LOSS_IMAGE, LOSS_IMAGE, dtype=torch.bool)
        for k in range(OBJECTS):
            y, x = torch.randint(0, LOSS_IMAGE - 128, (2,), generator=generator).tolist()
            h, w = torch.randint(16, 128, (2,), generator=generator).tolist()
            masks[k, y : y + h, x : x + w] = True
        targets.append({"labels": torch.randint(0, CLASSES, (OBJECTS,), generator=generator),
                        "masks": masks})  # fmt: skip
    return outputs, targets


def make_loss(which: str):
    outputs, targets = loss_inputs()
    matcher = MaskHungarianMatcher(num_points=12544)
    criterion = (MaskSetCriterion if which == "points" else FullMaskCriterion)(CLASSES, matcher)

    def run():
        criterion.total(criterion(outputs, targets)).backward()

    return run


class SharedBackbone(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.inner, self.channels = backbone, backbone.channels

    def forward(self, images):
        return SimpleNamespace(feature_maps=tuple(self.inner(images)))


def build(which: str):
    import transformers

    torch.manual_seed(0)
    ours = Mask2Former(CLASSES, backbone="resnet50")
    config = transformers.Mask2FormerConfig(
        backbone_config=dict(model_type="swin", embed_dim=64, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 1, 1],
                             out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=CLASSES,
    )  # fmt: skip
    peer = transformers.Mask2FormerForUniversalSegmentation(config)
    peer.model.pixel_level_module.decoder = type(peer.model.pixel_level_module.decoder)(
        config, feature_channels=ours.backbone.channels
    )
    peer.model.pixel_level_module.encoder = SharedBackbone(ours.backbone)
    if which == "hf":
        return peer
    state = mask2former_state_dict_from_hf(peer.state_dict())
    state = {k.replace("backbone.body.inner.body.", "backbone.body."): v for k, v in state.items()}
    ours.load_state_dict(state)
    return ours


def make_step(which: str, dtype: torch.dtype | None):
    model = build(which).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, STEP_IMAGE, STEP_IMAGE, generator=generator)
    targets = step_targets(generator)
    criterion = MaskSetCriterion(CLASSES)

    def step():
        torch.manual_seed(0)  # the same random points on both sides
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            if which == "hf":
                loss = model(
                    pixel_values=images,
                    mask_labels=[t["masks"].float() for t in targets],
                    class_labels=[t["labels"] for t in targets],
                ).loss
            else:
                loss = criterion.total(criterion(model(images), targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def make_attention(which: str):
    from transformers.models.mask2former.modeling_mask2former import (
        multi_scale_deformable_attention as peer_attention,
    )

    generator = torch.Generator().manual_seed(2)
    shapes = [(64, 64), (32, 32), (16, 16)]
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(BATCH, tokens, 8, 32, generator=generator, requires_grad=True)
    locations = torch.rand(BATCH, tokens, 8, 3, 4, 2, generator=generator, requires_grad=True)
    weights = torch.rand(BATCH, tokens, 8, 3, 4, generator=generator, requires_grad=True)
    function = multi_scale_deformable_attention if which == "vistra" else peer_attention
    args = (value, shapes, locations, weights)
    if which == "hf":
        args = (value, torch.tensor(shapes), locations, weights)

    def run():
        function(*args).sum().backward()

    return run


CASES = {"loss:points": lambda: make_loss("points"), "loss:full": lambda: make_loss("full")}
for _which in ("vistra", "hf"):
    for _name, _dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        CASES[f"step:{_which}:{_name}"] = lambda w=_which, d=_dtype: make_step(w, d)
    CASES[f"attention:{_which}"] = lambda w=_which: make_attention(w)
    CASES[f"swin:{_which}"] = lambda w=_which: make_swin(w)
SWIN_IMAGE = 512


def make_swin(which: str):
    """One Swin-T forward at 512 x 512 (random weights, shared by both sides)."""
    import transformers

    from vistra.models.mask2former.model import MultiScaleBackbone

    stages = ["stage1", "stage2", "stage3", "stage4"]
    peer = transformers.SwinBackbone(transformers.SwinConfig(out_features=stages)).eval()
    images = torch.randn(1, 3, SWIN_IMAGE, SWIN_IMAGE, generator=torch.Generator().manual_seed(0))
    if which == "hf":
        return torch.no_grad()(lambda: peer(images))
    ours = MultiScaleBackbone("swin_tiny_patch4_window7_224", False, (), None).eval()
    prefix = "model.pixel_level_module.encoder."
    state = mask2former_state_dict_from_hf({prefix + k: v for k, v in peer.state_dict().items()})
    ours.load_state_dict({k[len("backbone.") :]: v for k, v in state.items()}, strict=True)
    with torch.no_grad():
        for mine, theirs in zip(ours(images), peer(images).feature_maps):
            assert (mine - theirs).norm() <= 1e-5 * theirs.norm(), "outputs differ"
    release_freed_memory()  # the check's buffers must not count for (or against) the call
    return torch.no_grad()(lambda: ours(images))


def two_pass_sigmoid_ce(logits, targets):
    """The BCE matching cost as the peer (and vistra before) computes it: two log-sigmoid passes."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits),
                                                  reduction="none")  # fmt: skip
    return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]


def stacked_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights):
    """The deformable attention as the peer (and vistra before) computes it: all levels sampled
    into one [B*H, Dh, Q, L, P] stack, then weighted and summed."""
    batch, _, heads, head_dim = value.shape
    queries, levels, points = sampling_locations.shape[1], *sampling_locations.shape[3:5]
    grids = 2 * sampling_locations - 1
    maps = value.split([h * w for h, w in spatial_shapes], dim=1)
    sampled = [
        F.grid_sample(maps[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w),
                      grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries,
                                                                    points, 2),
                      mode="bilinear", padding_mode="zeros", align_corners=False)
        for level, (h, w) in enumerate(spatial_shapes)
    ]  # fmt: skip
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    output = (torch.stack(sampled, dim=3) * weights).sum(dim=(-2, -1))
    return output.view(batch, heads * head_dim, queries).transpose(1, 2)


def component_rows() -> list[list[str]]:
    """This session's three changes, each against the form it replaced, at the step's sizes."""
    from unittest import mock

    generator = torch.Generator().manual_seed(3)
    rows = []

    def compare(label, new, old, unit=1e3, suffix="ms", repeat=9):
        times = interleaved_seconds({"old": old, "new": new}, repeat=repeat)
        ratio, spread = round_ratios(times["old"], times["new"])
        rows.extend([[f"{label}, before", f"{median(times['old']) * unit:.1f} {suffix}", "", ""],
                     [f"{label}, vistra", f"{median(times['new']) * unit:.1f} {suffix}", "", ""],
                     [f"  before / vistra, {label}", ratio, "", spread]])  # fmt: skip
        print(table(HEADER, rows[-3:]), flush=True)

    logits = torch.randn(QUERIES, 12544, generator=generator) * 3
    targets = (torch.rand(8, 12544, generator=generator) > 0.6).float()
    compare("matcher BCE cost 100x8x12544", lambda: pairwise_sigmoid_ce(logits, targets),
            lambda: two_pass_sigmoid_ce(logits, targets))  # fmt: skip

    side = STEP_IMAGE // 8
    shapes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(BATCH, tokens, 8, 32, generator=generator, requires_grad=True)
    locations = torch.rand(BATCH, tokens, 8, 3, 4, 2, generator=generator, requires_grad=True)
    weights = torch.rand(BATCH, tokens, 8, 3, 4, generator=generator).softmax(-1)
    weights.requires_grad_(True)
    projection = torch.nn.Linear(256, 256)  # the gradient arrives as in the model

    def attention(function):
        return lambda: projection(function(value, shapes, locations, weights)).sum().backward()

    compare(f"deformable attention fwd+bwd, {STEP_IMAGE}px levels",
            attention(multi_scale_deformable_attention),
            attention(stacked_deformable_attention))  # fmt: skip

    uncertainty = -torch.randn(16, 3 * 12544, generator=generator).abs()
    keep = int(0.75 * 12544)
    compare("uncertain-point top-k 16x37632", lambda: uncertainty.topk(keep, 1, sorted=False),
            lambda: uncertainty.topk(keep, 1))  # fmt: skip

    criterion = MaskSetCriterion(CLASSES)
    outputs, loss_targets = step_loss_inputs()

    def loss():
        criterion.total(criterion(outputs, loss_targets)).backward()

    def loss_before():
        with mock.patch("vistra.losses.mask_matcher.pairwise_sigmoid_ce", two_pass_sigmoid_ce):
            loss()

    compare("set loss fwd+bwd, 10 predictions", loss, loss_before, repeat=5)
    return rows


def step_loss_inputs(seed: int = 4):
    """Predictions and targets of the step's size: batch 2, 100 queries, 96² mask logits, 10
    predictions, 8 objects per image."""
    generator = torch.Generator().manual_seed(seed)
    outputs = random_predictions(generator, STEP_IMAGE // 4)
    return outputs, step_targets(generator)


def step_targets(generator: torch.Generator) -> list[dict]:
    """8 box-shaped masks (64 x 80) per image at the step's size, random classes."""
    targets = []
    for _ in range(BATCH):
        masks = torch.zeros(8, STEP_IMAGE, STEP_IMAGE, dtype=torch.bool)
        for k in range(8):
            y, x = torch.randint(0, STEP_IMAGE - 96, (2,), generator=generator).tolist()
            masks[k, y : y + 64, x : x + 80] = True
        targets.append({"labels": torch.randint(0, CLASSES, (8,), generator=generator),
                        "masks": masks})  # fmt: skip
    return targets


def main(parts: set[str]) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    rows = []
    if "loss" in parts:
        rows += loss_rows()
    if "step" in parts:
        rows += step_rows()
    if "attention" in parts:
        rows += attention_rows()
    if "components" in parts:
        rows += component_rows()
    if "swin" in parts:
        rows += swin_rows()
    print(table(HEADER, rows))


def loss_rows() -> list[list[str]]:
    rows = []
    times = interleaved_seconds({key: CASES[key]() for key in ("loss:points", "loss:full")},
                                repeat=3)  # fmt: skip
    memory = {key: peak_memory_mib(__file__, key) for key in times}
    for key, label in (("loss:points", "point-sampled (12544 points)"),
                       ("loss:full", "full-resolution")):  # fmt: skip
        rows.append([f"loss, {label}", f"{median(times[key]) * 1e3:.0f} ms",
                     f"{memory[key]:.0f}", ""])  # fmt: skip
    ratio, spread = round_ratios(times["loss:full"], times["loss:points"])
    memory_ratio = memory["loss:full"] / max(memory["loss:points"], 1e-9)
    rows.append(["  full / points: time, memory", ratio, f"{memory_ratio:.1f}x", spread])
    print(table(HEADER, rows), flush=True)
    return rows


def step_rows() -> list[list[str]]:
    rows = []
    for precision in ("fp32", "bf16"):
        keys = [f"step:{which}:{precision}" for which in ("vistra", "hf")]
        times = interleaved_seconds({key: CASES[key]() for key in keys}, repeat=STEP_ROUNDS)
        for key in keys:
            which = key.split(":")[1]
            rows.append([f"step R50 {STEP_IMAGE}px b{BATCH}, {which} {precision}",
                         f"{median(times[key]):.2f} s", f"{peak_memory_mib(__file__, key):.0f}",
                         ""])  # fmt: skip
        ratio, spread = round_ratios(times[keys[1]], times[keys[0]])
        rows.append([f"  hf / vistra step time, {precision}", ratio, "", spread])
        print(table(HEADER, rows[-3:]), flush=True)
    return rows


def attention_rows() -> list[list[str]]:
    return side_by_side_rows("attention", "deformable attention fwd+bwd", repeat=9)


def swin_rows() -> list[list[str]]:
    return side_by_side_rows("swin", f"Swin-T {SWIN_IMAGE}px forward", repeat=8) + timm_rows()


def timm_rows() -> list[list[str]]:
    """Why vistra has its own Swin: timm's (``dynamic_img_size``, the option the Mask2Former
    configs used) against HF's, same weights, relative difference of each stage's map."""
    import timm
    import transformers

    stages = ["stage1", "stage2", "stage3", "stage4"]
    peer = transformers.SwinBackbone(transformers.SwinConfig(out_features=stages)).eval()
    body = timm.create_model("swin_tiny_patch4_window7_224", features_only=True,
                             dynamic_img_size=True).eval()  # fmt: skip
    prefix = "model.pixel_level_module.encoder."
    state = mask2former_state_dict_from_hf({prefix + k: v for k, v in peer.state_dict().items()})
    norms = {k: v for k, v in state.items() if k.startswith("backbone.out_norms.")}
    body.load_state_dict({k[len("backbone.body.") :]: v for k, v in state.items()
                          if k.startswith("backbone.body.")}, strict=False)  # fmt: skip
    rows = []
    for size in (224, SWIN_IMAGE):
        images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            theirs = peer(images).feature_maps
            mine = [F.layer_norm(m, m.shape[-1:], norms[f"backbone.out_norms.{i}.weight"],
                                 norms[f"backbone.out_norms.{i}.bias"]).permute(0, 3, 1, 2)
                    for i, m in enumerate(body(images))]  # fmt: skip
        differences = [float((a - b).norm() / b.norm()) for a, b in zip(mine, theirs)]
        rows.append([f"timm Swin-T vs HF, {size}px, stages 1-4 relative difference",
                     " / ".join(f"{d:.1e}" for d in differences), "", ""])  # fmt: skip
    return rows


def side_by_side_rows(case: str, label: str, repeat: int) -> list[list[str]]:
    """vistra's and the peer's ``case`` in alternating rounds: time, peak memory, ratio."""
    rows = []
    keys = [f"{case}:vistra", f"{case}:hf"]
    times = interleaved_seconds({key: CASES[key]() for key in keys}, repeat=repeat)
    for key in keys:
        rows.append([f"{label}, {key.split(':')[1]}", f"{median(times[key]) * 1e3:.0f} ms",
                     f"{peak_memory_mib(__file__, key):.0f}", ""])  # fmt: skip
    ratio, spread = round_ratios(times[keys[1]], times[keys[0]])
    rows.append([f"  hf / vistra {case} time", ratio, "", spread])
    return rows


HEADER = ["case", "time (median)", "peak MiB", "ratio range over rounds"]
STEP_ROUNDS = 8


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        report_peak(CASES[sys.argv[2]])
    else:
        known = {"loss", "step", "attention", "components", "swin"}
        chosen = {arg.removeprefix("--") for arg in sys.argv[1:]} & known
        main(chosen or known)
