"""Weighted k-nearest-neighbour classification of embeddings (Wu et al. 2018, InstDisc).

The monitor used by SupCon, SimCLR and MAE papers alike: cosine similarity to a memory bank of
training embeddings, the k nearest vote for their class with weight exp(similarity / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_classify(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of each query from its k nearest bank entries.

    Args:
        queries: [Q, D] embeddings (normalised here).
        bank: [N, D] training embeddings (normalised here).
        bank_labels: [N] int labels in 0..num_classes-1.
        num_classes: C.
        k: neighbours that vote (clipped to N).
        temperature: T in the vote weight exp(cos / T).

    Returns:
        [Q, C] summed vote weights; argmax is the prediction.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    queries, bank = F.normalize(queries.float(), dim=1), F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for chunk in queries.split(chunk_size):
        similarity, neighbours = (chunk @ bank.T).topk(k, dim=1)  # [q, k]
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, bank_labels[neighbours], weights)
        scores.append(votes)
    return torch.cat(scores)
