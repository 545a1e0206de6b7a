"""SupConLoss against a slow per-anchor loop written from the paper's L^sup_out formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from vistra.losses import SupConLoss


def slow_supcon(features, labels, temperature, base_temperature, contrast_mode):
    """Eq. 2 of Khosla et al. 2020, one anchor at a time, plain Python loops."""
    batch, views, _ = features.shape
    samples = [(n, v) for v in range(views) for n in range(batch)]
    anchors = [(n, v) for (n, v) in samples if contrast_mode == "all" or v == 0]
    if labels is None:
        labels = torch.arange(batch)
    terms = []
    for n, v in anchors:
        z = features[n, v]
        others = [(m, w) for (m, w) in samples if (m, w) != (n, v)]
        denominator = sum(math.exp(float(z @ features[m, w]) / temperature) for m, w in others)
        positives = [(m, w) for (m, w) in others if labels[m] == labels[n]]
        if not positives:
            continue
        total = sum(
            math.log(math.exp(float(z @ features[m, w]) / temperature) / denominator)
            for m, w in positives
        )
        terms.append(-(temperature / base_temperature) * total / len(positives))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("use_labels", [True, False])
@pytest.mark.parametrize("contrast_mode", ["all", "one"])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_slow_loop(views, use_labels, contrast_mode, temperature):
    generator = torch.Generator().manual_seed(views * 7 + int(use_labels))
    features = F.normalize(
        torch.randn(6, views, 5, generator=generator, dtype=torch.float64), dim=-1
    )
    labels = torch.tensor([0, 1, 0, 2, 1, 3]) if use_labels else None
    loss = SupConLoss(temperature, 0.07, contrast_mode)(features, labels)
    expected = slow_supcon(features, labels, temperature, 0.07, contrast_mode)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_explicit_mask_equals_labels():
    features = F.normalize(torch.randn(5, 2, 8), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    mask = labels[:, None] == labels[None, :]
    loss = SupConLoss()
    assert torch.allclose(loss(features, labels), loss(features, mask=mask))


def test_anchor_without_positive_is_excluded_not_nan():
    # One view each: only images sharing a label have positives; class 2 has a single image.
    features = F.normalize(torch.randn(3, 1, 4, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 2])
    loss = SupConLoss(0.1)(features, labels)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(slow_supcon(features, labels, 0.1, 0.07, "all"), rel=1e-9)
    nobody = SupConLoss()(features, torch.tensor([0, 1, 2]))
    assert nobody.item() == 0.0


def test_stable_at_tiny_temperature():
    features = F.normalize(torch.randn(8, 2, 16), dim=-1).requires_grad_()
    loss = SupConLoss(temperature=1e-3)(features, torch.randint(0, 3, (8,)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"base_temperature": -1}, {"contrast_mode": "some"}]
)
def test_bad_hyper_parameters(kwargs):
    with pytest.raises(ValueError):
        SupConLoss(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="B, V, D"):
        SupConLoss()(torch.randn(4, 8))
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(torch.randn(4, 2, 8), torch.zeros(3, dtype=torch.long))
