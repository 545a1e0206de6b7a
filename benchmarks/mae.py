"""MAE pre-training step: vistra against Hugging Face ViTMAEForPreTraining, side by side.

1. Step time (forward + backward + AdamW) and peak memory at ViT-B/16, 224x224, batch 8 and 32,
   float32 and bf16 autocast, both models holding the same weights and the same masking noise.
   Both use fused AdamW (the Hugging Face Trainer's default optimizer with torch >= 2.8).
2. The paper's ablation: the same step with the mask tokens fed through the encoder (all 196
   patches encoded) against the visible-only encoder — the pre-training speed-up — at ViT-B
   and at ViT-L (the paper's 2.8-4.1x is measured on ViT-L), batch 8, float32; ViT-L batch 16
   with --ablation, in a process of its own.
3. Achieved FLOP/s (torch.utils.flop_counter) against this machine's measured matmul peak.
Timing: the two sides of a comparison take turns, 8 rounds (3 for the ablation); step time is
the median, ratios the median of per-round ratios with their range.
4. AdamW's step alone over the same parameters: per-parameter loop, foreach, fused.
5. The attention core (``vistra.models.layers.attention``) against PyTorch's fused kernel at the
   encoder's and decoder's shapes, forward + backward.

Run: .venv/bin/python benchmarks/mae.py
    [--quick | --ablation | --optimizer | --attention | --compile]
(--quick: batch 8 only, no ViT-L; --ablation: only the ViT-L batch-16 ablation; --optimizer:
only part 4; --attention: only part 5; --compile: both models eager and under torch.compile,
batch 8 fp32). Each part's rows are printed as soon as they are measured, the whole table at
the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    interleaved_seconds,
    matmul_peak_flops,
    median,
    peak_memory_mib,
    release_freed_memory,
    report_peak,
    round_ratios,
    seconds_per_call,
    table,
)

from vistra.convert import mae_state_dict_from_hf  # noqa: E402
from vistra.losses.mae import mae_loss  # noqa: E402
from vistra.models.layers.attention import (  # noqa: E402
    float32_attention,
    scaled_dot_product_attention,
)
from vistra.models.layers.patches import patchify  # noqa: E402
from vistra.models.mae import MaskedAutoencoder  # noqa: E402

IMAGE, PATCH = 224, 16


# Encoder (width, depth, heads) of the HF config for each size.
SIZES = {"base": (768, 12, 12), "large": (1024, 24, 16)}


def build(which: str, size: str) -> torch.nn.Module:
    """ViT-{B,L}/16 MAE, the same random weights on both sides (HF's init, copied into ours)."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    width, depth, heads = SIZES[size]
    config = ViTMAEConfig(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                          intermediate_size=4 * width, layer_norm_eps=1e-6, norm_pix_loss=True,
                          attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(0)
    peer = ViTMAEForPreTraining(config)
    if which == "hf":
        return peer
    ours = MaskedAutoencoder(size, IMAGE, PATCH)
    ours.load_state_dict(mae_state_dict_from_hf(peer.state_dict()))
    return ours


def make_step(which: str, size: str, batch: int, dtype: torch.dtype | None):
    """A closure running one training step; which in {"vistra", "hf", "vistra-encode-all"},
    with "-compiled" appended: the loss computation under ``torch.compile`` (the first call
    compiles; compiling the module would compile only ``forward``, which vistra's
    ``pretraining_loss`` does not call)."""
    compiled = which.endswith("-compiled")
    which = which.removesuffix("-compiled")
    model = build(which, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, IMAGE, IMAGE, generator=generator)
    noise = torch.rand(batch, (IMAGE // PATCH) ** 2, generator=generator)
    losses = {
        "hf": lambda: model(pixel_values=images, noise=noise).loss,
        "vistra": lambda: model.pretraining_loss(images, noise),
        "vistra-encode-all": lambda: encode_all_loss(model, images, noise),
    }
    loss_of = torch.compile(losses[which]) if compiled else losses[which]

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def encode_all_loss(model: MaskedAutoencoder, images, noise):
    """The ablation: every patch (mask tokens in place of removed ones) goes through the encoder;
    the decoder is the one of ``pretraining_loss`` (the last block at removed rows only)."""
    tokens = model.project_patches(patchify(images, model.patch_size))
    keep = int(tokens.shape[1] * (1 - model.mask_ratio))
    ids_shuffle = noise.argsort(dim=1)
    removed = ids_shuffle[:, keep:]
    mask = ids_shuffle.argsort(dim=1) >= keep  # True = removed
    encoder_mask_token = model.mask_token.new_zeros(1, 1, tokens.shape[-1])
    tokens = torch.where(mask[..., None], encoder_mask_token, tokens) + model.pos_embed[:, 1:]
    cls = (model.cls_token + model.pos_embed[:, :1]).expand(len(images), -1, -1)
    hidden = torch.cat([cls, tokens], dim=1)
    for block in model.blocks:
        hidden = block(hidden)
    hidden = model.decoder_embed(model.norm(hidden)) + model.decoder_pos_embed
    for block in model.decoder_blocks[:-1]:
        hidden = block(hidden)
    predictions = model.decode_removed(hidden, removed)
    return mae_loss(predictions, images, removed, model.patch_size, model.norm_pix_loss)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def compare(cases: list[str], size: str, batch: int, precision: str, peaks: dict,
            rounds: int = 8) -> tuple[dict[str, list[float]], list[list]]:  # fmt: skip
    """Per-round step times of each of ``cases`` ({"vistra", "hf", "vistra-encode-all"}),
    taking turns (see ``interleaved_seconds``), and one table row per case. The FLOP-counted
    step is each case's warm-up."""
    steps, flops = {}, {}
    for which in cases:
        steps[which] = make_step(which, size, batch, PRECISIONS[precision])
        with FlopCounterMode(display=False) as counter:
            steps[which]()
        flops[which] = counter.get_total_flops()
        if which.endswith("-compiled"):  # recompiles outside the FLOP counter: not in round 1
            steps[which]()
    print("GFLOP per step: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in flops.items()))
    times = interleaved_seconds(steps, warmup=0, repeat=rounds)
    steps.clear()  # free both models before the peak-memory children run (ViT-L: 24 GiB)
    release_freed_memory()
    rows = []
    for which in cases:
        seconds = median(times[which])
        memory = peak_memory_mib(__file__, f"{which}:{size}:{batch}:{precision}")
        name = which if size == "base" else f"{which} (ViT-L)"
        share = flops[which] / seconds / peaks[precision]
        rows.append([name, batch, precision, f"{seconds:.2f}", f"{memory:.0f}",
                     f"{batch / seconds:.1f}", f"{share:.0%}"])  # fmt: skip
    return times, rows


def ratio_row(label: str, numerator: list[float], denominator: list[float]) -> list:
    """Median of the per-round ratios, with their range."""
    ratio, spread = round_ratios(numerator, denominator)
    return [f"  {label}", "", "", ratio, "", "", spread]


HEADER = ["model", "batch", "precision", "s / step", "peak MiB", "img/s", "of peak / ratio range"]


def optimizer_table() -> str:
    """AdamW's step alone over the ViT-B/16 MAE's parameters: the loop, foreach and fused."""
    parameters = list(MaskedAutoencoder("base", IMAGE, PATCH).parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    rows = []
    for name, options in (("loop", {"foreach": False}), ("foreach", {"foreach": True}),
                          ("fused", {"fused": True})):  # fmt: skip
        optimizer = torch.optim.AdamW(parameters, lr=1e-4, **options)
        seconds = seconds_per_call(optimizer.step, warmup=2, repeat=5)
        rows.append([f"AdamW {name}", f"{sum(p.numel() for p in parameters) / 1e6:.0f} M",
                     f"{seconds * 1e3:.0f}"])  # fmt: skip
    return table(["optimizer step", "parameters", "ms / step"], rows)


def attention_table() -> str:
    """vistra's attention core against PyTorch's fused kernel, forward + backward, at the MAE
    encoder's (50 tokens, 12 heads of 64) and decoder's (197 tokens, 16 heads of 32) shapes;
    then, batch 8 bf16, 16 heads of 32, the float32 form that the core uses up to
    ``EXPLICIT_CPU_BF16_MAX_KEYS`` keys against the fused kernel, over the number of keys."""
    cases = [(f"{name} b{batch}", precision, batch, length, heads, head_dim,
              scaled_dot_product_attention)
             for name, length, heads, head_dim in (("encoder", 50, 12, 64),
                                                   ("decoder", 197, 16, 32))
             for batch in (8, 32) for precision in ("fp32", "bf16")]  # fmt: skip
    cases += [(f"float32 form, {length} keys", "bf16", 8, length, 16, 32, float32_attention)
              for length in (50, 100, 150, 197, 257)]  # fmt: skip
    rows = []
    for label, precision, batch, length, heads, head_dim, ours in cases:
        dtype = PRECISIONS[precision] or torch.float32
        inputs = [torch.randn(batch, heads, length, head_dim).to(dtype).requires_grad_()
                  for _ in range(3)]  # fmt: skip

        def run(attend, inputs=inputs):
            return lambda: attend(*inputs).float().sum().backward()

        times = interleaved_seconds(
            {"vistra": run(ours), "torch": run(torch.nn.functional.scaled_dot_product_attention)},
            warmup=2, repeat=10,
        )  # fmt: skip
        ratio, spread = round_ratios(times["torch"], times["vistra"])
        rows.append([label, precision, f"{median(times['vistra']) * 1e3:.1f}",
                     f"{median(times['torch']) * 1e3:.1f}", ratio, spread])  # fmt: skip
    header = ["attention", "precision", "vistra ms", "torch SDPA ms", "torch / vistra", "range"]
    return table(header, rows)


def compile_table(peaks: dict) -> str:
    """Both models eager and under torch.compile, ViT-B batch 8 fp32, taking turns."""
    cases = ["vistra", "vistra-compiled", "hf", "hf-compiled"]
    times, rows = compare(cases, "base", 8, "fp32", peaks)
    rows += [ratio_row("hf / vistra-compiled", times["hf"], times["vistra-compiled"]),
             ratio_row("hf-compiled / vistra-compiled", times["hf-compiled"],
                       times["vistra-compiled"])]  # fmt: skip
    return table(HEADER, rows)


def main(quick: bool, only_ablation: bool = False) -> None:
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {IMAGE}px, patch {PATCH}\n")
    peaks = {"fp32": matmul_peak_flops(torch.float32), "bf16": matmul_peak_flops(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s\n")
    rows = []
    for batch in () if only_ablation else (8,) if quick else (8, 32):
        for precision in PRECISIONS:
            times, pair = compare(["vistra", "hf"], "base", batch, precision, peaks)
            rows += pair + [ratio_row("hf / vistra time", times["hf"], times["vistra"])]
            print(table(HEADER, rows[-3:]), flush=True)
    # ViT-L batch 16 in its own process only (--ablation): two ViT-L models with their optimizer
    # states and activations hold 19 GB, near this machine's 24 GiB after the other cases.
    ablations = [("base", 8)] if quick else [("base", 8), ("large", 8)]
    if only_ablation:
        ablations, rows = [("large", 16)], []
    for size, batch in ablations:
        cases = ["vistra", "vistra-encode-all"]
        times, pair = compare(cases, size, batch, "fp32", peaks, rounds=3)
        rows += pair + [ratio_row("encode-all / visible-only", times[cases[1]], times[cases[0]])]
        print(table(HEADER, rows[-3:]), flush=True)
    if not only_ablation:
        print(table(HEADER, rows))
        print(optimizer_table())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        which, size, batch, precision = sys.argv[2].split(":")
        report_peak(lambda: make_step(which, size, int(batch), PRECISIONS[precision]))
    elif "--optimizer" in sys.argv:
        print(optimizer_table())
    elif "--attention" in sys.argv:
        print(attention_table())
    elif "--compile" in sys.argv:
        print(compile_table({"fp32": matmul_peak_flops(torch.float32)}))
    else:
        main(quick="--quick" in sys.argv, only_ablation="--ablation" in sys.argv)
