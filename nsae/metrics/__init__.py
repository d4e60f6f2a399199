"""SAE metrics as torchmetrics `Metric`s, one value per layer (results keep their [L] or
[L, ...] shape for any L, one layer included).

All metrics update from `(x_BLD, x_hat_BLD, f_BLM)` through a shared `Batch`, which
computes the per-token quantities several metrics need (L0, L1, squared error, norms) once.

- base: `Batch`, `ShapedMetric`, `LayerMetric`, `RatioOfSums`.
- reconstruction, sparsity: the per-layer metrics; collection: `METRICS`, `SAEMetrics`.
- splice: `SpliceMetrics` (downstream CE/KL, nsae's and SAEBench's).
- saebench: `SAEBenchMetrics` (l2_ratio, frac_alive), `saebench_mask`.
- binned: `NormBinnedMetrics` (per input-norm decile and position 0), `decile_edges`.
- summary: metrics.json helpers.
"""

from nsae.metrics.base import Batch, LayerMetric, RatioOfSums, ShapedMetric
from nsae.metrics.binned import NormBinnedMetrics, decile_edges
from nsae.metrics.collection import METRICS, SAEMetrics
from nsae.metrics.saebench import SAEBenchMetrics, saebench_mask
from nsae.metrics.sparsity import FeatureDensity, RecentFiring
from nsae.metrics.splice import SpliceMetrics
from nsae.metrics.summary import cross_layer_stats, density_histogram, per_layer_dict

__all__ = [
    "METRICS",
    "Batch",
    "FeatureDensity",
    "LayerMetric",
    "NormBinnedMetrics",
    "RatioOfSums",
    "RecentFiring",
    "SAEBenchMetrics",
    "SAEMetrics",
    "ShapedMetric",
    "SpliceMetrics",
    "cross_layer_stats",
    "decile_edges",
    "density_histogram",
    "per_layer_dict",
    "saebench_mask",
]
