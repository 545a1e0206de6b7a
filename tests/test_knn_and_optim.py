import copy
import math

import pytest
import torch

from vistra.evaluation.knn import knn_classify
from vistra.tasks.optim import build_optimizer, cosine_with_warmup


def test_knn_votes_weighted_by_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    scores = knn_classify(
        torch.tensor([[0.2, 1.0]]), bank, labels, num_classes=2, k=2, temperature=1
    )
    query = torch.nn.functional.normalize(torch.tensor([0.2, 1.0]), dim=0)
    unit = torch.nn.functional.normalize(bank, dim=1)
    similarity = unit @ query
    # The two nearest are the class-1 point and the second class-0 point.
    expected = torch.tensor([math.exp(similarity[1]), math.exp(similarity[2])])
    torch.testing.assert_close(scores[0], expected)
    with pytest.raises(ValueError):
        knn_classify(bank, bank, labels, 2, k=0)


def test_cosine_with_warmup_shape():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=4, total_steps=14)
    rates = []
    for _ in range(14):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0) and rates[9] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))


def test_no_weight_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    optimizer = build_optimizer(model, "lars", lr=0.1, weight_decay=0.5)
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(model[0].weight)}
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, "adam9", 0.1, 0.0)


def test_training_steps_counts_the_datamodule_loader():
    from types import SimpleNamespace

    from vistra.tasks.optim import training_steps

    loader = list(range(11))  # 11 batches
    datamodule = SimpleNamespace(train_dataloader=lambda: loader)

    def trainer(**overrides):
        options = dict(world_size=1, limit_train_batches=1.0, accumulate_grad_batches=1,
                       max_epochs=3, max_steps=-1, datamodule=datamodule)  # fmt: skip
        return SimpleNamespace(**{**options, **overrides})

    assert training_steps(trainer()) == (11, 33)
    assert training_steps(trainer(accumulate_grad_batches=2)) == (6, 18)
    assert training_steps(trainer(limit_train_batches=4)) == (4, 12)
    assert training_steps(trainer(max_steps=20)) == (11, 20)
    assert training_steps(trainer(max_epochs=-1, max_steps=50)) == (11, 50)


def test_adamw_is_fused_unless_the_trainer_clips_gradients():
    from types import SimpleNamespace

    from vistra.tasks.optim import fused_allowed

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    assert build_optimizer(model, "adamw", 1e-3, 0.05).defaults["fused"] is True
    assert not build_optimizer(model, "adamw", 1e-3, 0.05, fused=False).defaults["fused"]
    assert fused_allowed(SimpleNamespace(gradient_clip_val=None, precision="bf16-mixed"))
    assert fused_allowed(SimpleNamespace(gradient_clip_val=0.1, precision="32-true"))
    assert not fused_allowed(SimpleNamespace(gradient_clip_val=0.1, precision="16-mixed"))
    # The fused step is the same update as the loop over parameters.
    reference = copy.deepcopy(model)
    for net, fused in ((model, True), (reference, False)):
        optimizer = build_optimizer(net, "adamw", 1e-2, 0.05, fused=fused)
        for _ in range(3):
            optimizer.zero_grad()
            net(torch.ones(2, 4)).pow(2).sum().backward()
            optimizer.step()
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs)


def fake_trainer(world: int, accumulation: int, batch: int = 32):
    """What ``configure_optimizers`` reads of a trainer, for ``world`` processes."""
    from types import SimpleNamespace

    loader = [None] * 64  # 64 batches per epoch on one process
    datamodule = SimpleNamespace(batch_size=batch, train_dataloader=lambda: loader)
    return SimpleNamespace(datamodule=datamodule, world_size=world,
                           accumulate_grad_batches=accumulation, max_epochs=1, max_steps=-1,
                           limit_train_batches=1.0, gradient_clip_val=None)  # fmt: skip


@pytest.mark.parametrize("task_name", ["MAEPretraining", "FineTuning", "LinearProbe"])
def test_the_linear_scaling_rule_counts_devices_nodes_and_accumulation(task_name):
    """lr = base_lr x global batch / 256 (MAE, its fine-tuning and probe): 1 device x 4
    accumulation, 2 x 2 and 4 x 1 give the same rate; 1 x 1 a quarter of it."""
    from vistra.models import MaskedAutoencoder, ViTClassifier
    from vistra.tasks import FineTuning, LinearProbe, MAEPretraining

    torch.manual_seed(0)
    encoder = MaskedAutoencoder("tiny", image_size=32, patch_size=8, decoder_depth=1, depth=1)
    task = {
        "MAEPretraining": lambda: MAEPretraining(encoder, base_lr=1e-3),
        "FineTuning": lambda: FineTuning(
            ViTClassifier(3, "tiny", image_size=32, patch_size=8, depth=1), base_lr=1e-3
        ),
        "LinearProbe": lambda: LinearProbe(3, network=encoder, base_lr=1e-3),
    }[task_name]()
    rates = []
    for world, accumulation in ((1, 4), (2, 2), (4, 1), (1, 1)):
        task._trainer = fake_trainer(world, accumulation)
        optimizer = task.configure_optimizers()["optimizer"]
        rates.append(max(group["initial_lr"] for group in optimizer.param_groups))
    expected = 1e-3 * 32 * 4 / 256
    assert rates == pytest.approx([expected] * 3 + [expected / 4])
