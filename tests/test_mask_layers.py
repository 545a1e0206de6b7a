"""Mask2Former building blocks: deformable attention, point sampling, point-sampled losses.

Each is checked against a slow loop written from its definition and against the Hugging Face
Mask2Former functions with the same inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vistra.losses.mask_losses import dice_loss, sigmoid_ce_loss
from vistra.models.layers.ms_deform_attn import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attention,
)
from vistra.models.layers.point_sample import point_sample, uncertain_points

hf = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")


def _bilinear(feature: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """feature [C, H, W] at (x, y) in 0..1 (align_corners=False), zeros outside: slow loop."""
    height, width = feature.shape[-2:]
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = torch.zeros(feature.shape[0], dtype=feature.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < width and 0 <= yi < height:
                total += weight * feature[:, yi, xi]
    return total


def _random_inputs(seed: int, shapes, batch=2, queries=3, heads=2, head_dim=4, points=3):
    generator = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in shapes)
    value = torch.randn(batch, total, heads, head_dim, generator=generator, dtype=torch.float64)
    # Some locations fall outside the map on purpose (they must read zeros).
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator,
                           dtype=torch.float64) * 1.2 - 0.1  # fmt: skip
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator,
                         dtype=torch.float64)  # fmt: skip
    weights = weights / weights.sum(dim=(-2, -1), keepdim=True)
    return value, locations, weights


@pytest.mark.parametrize("shapes", [[(4, 5)], [(6, 7), (3, 4), (2, 2)]])
def test_deformable_attention_equals_a_slow_loop(shapes):
    value, locations, weights = _random_inputs(0, shapes)
    got = multi_scale_deformable_attention(value, shapes, locations, weights)
    batch, queries, heads, levels, points, _ = locations.shape
    head_dim = value.shape[-1]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    expected = torch.zeros(batch, queries, heads * head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(queries):
            for head in range(heads):
                acc = torch.zeros(head_dim, dtype=torch.float64)
                for level, (h, w) in enumerate(shapes):
                    level_map = value[b, starts[level] : starts[level + 1], head].T.reshape(
                        -1, h, w
                    )
                    for p in range(points):
                        x, y = locations[b, q, head, level, p].tolist()
                        acc += weights[b, q, head, level, p] * _bilinear(level_map, x, y)
                expected[b, q, head * head_dim : (head + 1) * head_dim] = acc
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    peer = hf.multi_scale_deformable_attention(value, shapes, locations, weights)
    torch.testing.assert_close(got, peer, rtol=1e-10, atol=1e-10)


def test_deformable_attention_module_matches_the_peer_with_the_same_weights():
    shapes = [(8, 8), (4, 4), (2, 2)]
    torch.manual_seed(0)
    ours = MultiScaleDeformableAttention(dim=32, heads=4, levels=3, points=4)
    peer = hf.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(32, 4, 3, 4)
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # move away from the init
    peer.load_state_dict(ours.state_dict())
    value = torch.randn(2, sum(h * w for h, w in shapes), 32)
    query = torch.randn(2, 5, 32)
    reference = torch.rand(2, 5, 3, 2)
    padding = torch.zeros(2, value.shape[1], dtype=torch.bool)
    padding[1, -6:] = True
    got = ours(query, reference, value, shapes, padding)
    expected, _ = peer(query, attention_mask=padding, encoder_hidden_states=value,
                       reference_points=reference, spatial_shapes_list=shapes)  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_initial_offsets_form_a_ring_per_head_and_weights_are_uniform():
    layer = MultiScaleDeformableAttention(dim=16, heads=8, levels=2, points=3)
    offsets = layer.sampling_offsets.bias.view(8, 2, 3, 2)
    assert torch.allclose(offsets[:, :, 1], 2 * offsets[:, :, 0])  # distances 1, 2, 3
    assert torch.allclose(offsets[0, 0, 0], torch.tensor([1.0, 0.0]))  # head 0 looks right
    weights = layer.attention_weights(torch.randn(1, 16)).view(8, 6).softmax(-1)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 6))


def test_point_sample_is_bilinear_with_zero_padding():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    points = torch.rand(2, 7, 2, generator=generator, dtype=torch.float64) * 1.2 - 0.1
    got = point_sample(maps, points)
    for n in range(2):
        for p in range(7):
            expected = _bilinear(maps[n], *points[n, p].tolist())
            torch.testing.assert_close(got[n, :, p], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, hf.sample_point(maps, points, align_corners=False))


def test_uncertain_points_keeps_the_most_uncertain_share():
    logits = torch.full((3, 1, 16, 16), 10.0)
    logits[:, :, :, :8] = 0.0  # the left half is maximally uncertain
    points = uncertain_points(logits, 40, oversample=3.0, importance=0.75)
    assert points.shape == (3, 40, 2)
    assert ((points >= 0) & (points <= 1)).all()
    important = points[:, :30]
    assert (important[..., 0] < 0.5 + 1 / 32).all()  # all drawn from the uncertain half
    assert (points[:, 30:, 0] > 0.5).any()  # the uniform rest is not
    with pytest.raises(ValueError):
        uncertain_points(logits, 10, oversample=0.5)


def test_uncertain_points_are_exactly_the_top_candidates_plus_fresh_uniform_points():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 12, 12, generator=generator) * 3
    replayed = [torch.Generator().manual_seed(5)]
    points = uncertain_points(logits, 20, 3.0, 0.75, generators=replayed, counts=[2])
    replay = torch.Generator().manual_seed(5)  # the same draws, in the same order
    candidates = torch.rand(2, 60, 2, generator=replay)
    extra = torch.rand(2, 5, 2, generator=replay)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()
    for row in range(2):
        best = candidates[row][uncertainty[row].argsort(descending=True)[:15]]
        as_set = lambda xy: sorted(map(tuple, xy.tolist()))  # noqa: E731
        assert as_set(points[row, :15]) == as_set(best)
        torch.testing.assert_close(points[row, 15:], extra[row])


@pytest.mark.parametrize("num_masks", [1.0, 3.5])
def test_point_losses_equal_their_formulas_and_the_peer(num_masks):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=generator, dtype=torch.float64)
    targets = (torch.rand(4, 50, generator=generator) > 0.5).double()
    probabilities = logits.sigmoid()
    expected_ce = sum(
        -(targets[m] * probabilities[m].log() + (1 - targets[m]) * (1 - probabilities[m]).log())
        .mean() for m in range(4)
    ) / num_masks  # fmt: skip
    expected_dice = sum(
        1 - (2 * (probabilities[m] * targets[m]).sum() + 1)
        / (probabilities[m].sum() + targets[m].sum() + 1) for m in range(4)
    ) / num_masks  # fmt: skip
    torch.testing.assert_close(sigmoid_ce_loss(logits, targets, num_masks), expected_ce)
    torch.testing.assert_close(dice_loss(logits, targets, num_masks), expected_dice)
    torch.testing.assert_close(dice_loss(logits, targets, num_masks),
                               hf.dice_loss(logits, targets, num_masks))  # fmt: skip
    peer_ce = hf.sigmoid_cross_entropy_loss(logits, targets, num_masks)
    torch.testing.assert_close(sigmoid_ce_loss(logits, targets, num_masks), peer_ce)


def test_pairwise_mask_costs_equal_the_per_pair_losses():
    from vistra.losses.mask_matcher import pairwise_dice, pairwise_sigmoid_ce

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 30, generator=generator, dtype=torch.float64)
    targets = (torch.rand(3, 30, generator=generator) > 0.4).double()
    ce, dice = pairwise_sigmoid_ce(logits, targets), pairwise_dice(logits, targets)
    for q in range(5):
        for t in range(3):
            torch.testing.assert_close(
                ce[q, t], sigmoid_ce_loss(logits[q : q + 1], targets[t : t + 1], 1.0)
            )
            torch.testing.assert_close(
                dice[q, t], dice_loss(logits[q : q + 1], targets[t : t + 1], 1.0)
            )


def test_pairwise_sigmoid_ce_is_stable_for_extreme_logits_and_soft_targets():
    from vistra.losses.mask_matcher import pairwise_sigmoid_ce

    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 50, generator=generator) * 40  # up to ~+-150: exp overflows
    logits[0, :3] = torch.tensor([0.0, 200.0, -200.0])
    targets = torch.rand(3, 50, generator=generator)  # soft, as bilinear samples at mask edges
    expected = torch.stack([F.binary_cross_entropy_with_logits(logits, t.expand_as(logits),
                                                               reduction="none").mean(1)
                            for t in targets], dim=1)  # fmt: skip
    got = pairwise_sigmoid_ce(logits, targets)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_an_images_points_do_not_depend_on_the_other_images_in_its_batch():
    # what makes a 4-process step equal the 1-process step on the concatenated batch
    logits = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    seeds = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    together = uncertain_points(logits, 20, generators=seeds, counts=[2, 0, 3])
    alone = uncertain_points(logits[2:], 20, generators=[torch.Generator().manual_seed(13)],
                             counts=[3])  # fmt: skip
    assert torch.equal(together[2:], alone)
    with pytest.raises(ValueError, match="counts"):
        uncertain_points(logits, 20, generators=seeds, counts=[2, 2])


@pytest.mark.parametrize("seed", range(4))
def test_mask_matcher_equals_brute_force_on_the_same_points(seed):
    import itertools

    from vistra.losses.mask_matcher import MaskHungarianMatcher, pairwise_dice, pairwise_sigmoid_ce

    generator = torch.Generator().manual_seed(seed)
    queries, count = 5, 3
    outputs = {"pred_logits": torch.randn(1, queries, 4, generator=generator),
               "pred_masks": torch.randn(1, queries, 8, 8, generator=generator)}  # fmt: skip
    masks = torch.rand(count, 16, 16, generator=generator) > 0.5
    target = {"labels": torch.randint(0, 3, (count,), generator=generator), "masks": masks}
    matcher = MaskHungarianMatcher(2, 5, 5, num_points=64)
    ((rows, cols),) = matcher(outputs, [target], [torch.Generator().manual_seed(9)])
    points = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(9))  # the same draw
    predicted = point_sample(outputs["pred_masks"][0][:, None], points.expand(queries, -1, -1))[
        :, 0
    ]
    wanted = point_sample(masks[:, None].float(), points.expand(count, -1, -1))[:, 0]
    class_cost = -2 * outputs["pred_logits"][0].softmax(-1)[:, target["labels"]]
    mask_cost = 5 * pairwise_sigmoid_ce(predicted, wanted) + 5 * pairwise_dice(predicted, wanted)
    cost = class_cost + mask_cost
    best = min(sum(cost[q, t].item() for t, q in enumerate(assignment))
               for assignment in itertools.permutations(range(queries), count))  # fmt: skip
    assert sum(cost[q, t].item() for q, t in zip(rows, cols)) == pytest.approx(best, abs=1e-5)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16).bool()}
    assert len(matcher(outputs, [empty])[0][0]) == 0


def test_mask_matcher_costs_stay_float32_under_bf16_autocast_and_nan_is_named():
    from vistra.losses.mask_matcher import MaskHungarianMatcher

    generator = torch.Generator().manual_seed(4)
    outputs = {"pred_logits": torch.randn(2, 30, 6, generator=generator),
               "pred_masks": torch.randn(2, 30, 24, 24, generator=generator) * 4}  # fmt: skip
    targets = [{"labels": torch.randint(0, 5, (7,), generator=generator),
                "masks": torch.rand(7, 96, 96, generator=generator) > 0.6}
               for _ in range(2)]  # fmt: skip
    matcher = MaskHungarianMatcher(num_points=2000)
    expected = matcher.cost_matrix(outputs, 1, targets[1], torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = matcher.cost_matrix(outputs, 1, targets[1], torch.Generator().manual_seed(0))
        matches = matcher(outputs, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert [len(rows) for rows, _ in matches] == [7, 7]
    outputs["pred_masks"][1, 3, 5, 5] = float("nan")
    with pytest.raises(FloatingPointError, match="image 1 is not finite"):
        matcher(outputs, targets)
