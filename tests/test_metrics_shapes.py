"""Every metric result keeps its [L] (or [L, ...]) shape for any layer count, L = 1 included
(torchmetrics squeezes one-element results), and the JSON helpers take it."""

from __future__ import annotations

import pytest
import torch

from nsae.errors import NsaeError
from nsae.metrics import (
    METRICS,
    Batch,
    FeatureDensity,
    NormBinnedMetrics,
    RecentFiring,
    SAEBenchMetrics,
    SAEMetrics,
    SpliceMetrics,
    density_histogram,
    per_layer_dict,
)

B, D, T, V = 20, 3, 5, 4


def tensors(n_layers: int, n_features: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(n_layers * 10 + n_features)
    x = torch.randn(B, n_layers, D, generator=g)
    return x, 0.5 * x, torch.relu(torch.randn(B, n_layers, n_features, generator=g))


@pytest.mark.parametrize("n_layers", [1, 3])
@pytest.mark.parametrize("n_features", [1, 6])
def test_every_metric_keeps_its_layer_shape(n_layers: int, n_features: int) -> None:
    x, x_hat, f = tensors(n_layers, n_features)
    b = Batch(x, x_hat, f)
    metrics = SAEMetrics(list(METRICS), n_layers, D, n_features)
    metrics.update(b)
    density = FeatureDensity(n_layers, D, n_features)
    density.update(b)
    saebench = SAEBenchMetrics(n_layers, n_features)
    saebench.update(b, torch.ones(B, dtype=torch.bool))
    binned = NormBinnedMetrics(n_layers, torch.linspace(0.5, 2.5, 9).expand(n_layers, 9))
    binned.update(b, torch.arange(B) % T == 0)
    recent = RecentFiring(n_layers, D, n_features)
    recent.update_fired(b.fired_LM)
    splice = SpliceMetrics(n_layers)
    ids = torch.randint(0, V, (2, T))
    for j in range(n_layers):
        splice.update_from_logits(j, ids, *torch.randn(3, 2, T, V).unbind())

    per_layer = metrics.compute() | splice.compute() | saebench.compute()
    per_layer["dead_fraction"] = recent.dead_fraction(1)
    per_layer["l0_norm_slope"] = binned.compute()["l0_norm_slope"]
    for name, value in per_layer.items():
        assert value.shape == (n_layers,), name
    for name, value in binned.compute().items():
        assert value.shape == ((n_layers,) if name == "l0_norm_slope" else (n_layers, 11)), name
    assert density.compute().shape == (n_layers, n_features)
    assert density.compute().shape == (n_layers, n_features)  # the cached result too

    layers = list(range(2, 2 + n_layers))
    rows = per_layer_dict(per_layer, layers)
    assert all(set(r) == {*(f"layer_{i}" for i in layers), "mean"} for r in rows.values())
    torch.testing.assert_close(
        torch.tensor([rows["l0"][f"layer_{i}"] for i in layers], dtype=torch.float64),
        (f > 0).double().sum(-1).mean(0),
    )
    assert set(density_histogram(density.compute(), layers)) == {f"layer_{i}" for i in layers}
    assert set(binned.to_json(layers)["by_norm_decile"]) == {
        *(f"layer_{i}" for i in layers),
        "position_0",
    }


def test_per_layer_dict_takes_a_scalar_for_one_layer_and_names_a_mismatch() -> None:
    assert per_layer_dict({"l0": torch.tensor(4.0)}, [2]) == {"l0": {"layer_2": 4.0, "mean": 4.0}}
    with pytest.raises(NsaeError, match="metric 'l0' has 2 values for 3 layers"):
        per_layer_dict({"l0": torch.tensor([1.0, 2.0])}, [0, 1, 2])
