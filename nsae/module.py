"""The LightningModule: owns the SAE bank, the loss, the metrics and the optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from nsae.data.norms import mean_norms
from nsae.errors import NsaeError
from nsae.loss import SAELoss, layer_coefficients
from nsae.metrics import (
    Batch,
    FeatureDensity,
    RecentFiring,
    SAEMetrics,
    SpliceMetrics,
    per_layer_dict,
)


class SAEModule(L.LightningModule):
    """Trains the SAE bank on activation batches [B, L, D]; validates and evaluates on
    held-out contexts [B, T] that it harvests through the datamodule (noise off)."""

    def __init__(
        self,
        sae: Any,
        layers: list[int],
        normalization_method: str,
        coeff: Any,
        optim: Any,
        metrics: Any,
        init_b_dec: str = "mean",
    ) -> None:
        super().__init__()
        self.sae, self.layers, self.coeff, self.optim = sae, list(layers), coeff, optim
        self.init_b_dec, self.splice = init_b_dec, bool(metrics.splice)
        L_, D, M = sae.n_layers, sae.d_model, sae.n_features
        self.loss_fn = SAELoss(normalization_method, torch.zeros(L_))
        self.train_metrics = SAEMetrics(list(metrics.train), L_, D, M)
        self.val_metrics = SAEMetrics(list(metrics.eval), L_, D, M)
        self.splice_metrics = SpliceMetrics(L_)
        self.density = FeatureDensity(L_, D, M)  # firing frequency over the evaluation set
        self.recent = RecentFiring(L_, D, M)  # for dead_fraction over recent training tokens
        self.dead_window_tokens = int(metrics.dead_window_tokens)
        # Training metrics (a running estimate; the final evaluation is exact) use every
        # n-th step's batch, which keeps their cost off most steps.
        self.train_every_n_steps = int(metrics.get("train_every_n_steps", 1))
        self.eval_results: dict[str, Tensor] = {}
        self.eval_density: Tensor | None = None
        # Set once from the norm statistics; restored from checkpoints, never re-estimated.
        self.register_buffer("initialized", torch.tensor(False))

    # -- set-up from the data's norm statistics (before DDP wraps the module) -------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if stage != "fit" or bool(self.initialized):
            return
        n_L = mean_norms(dm.norm_stats, self.layers)
        c_L = layer_coefficients(
            self.coeff.mode,
            self.coeff.alpha,
            self.loss_fn.p,
            n_L,
            self.coeff.get("k"),
            self.sae.feature_scaling,
        )
        self.loss_fn.coeff_L.copy_(c_L)
        self.sae.init_b_dec(dm.norm_sample.to(self.sae.b_dec_LD.device), self.init_b_dec)
        self.initialized.fill_(True)

    @property
    def coefficients(self) -> dict[str, float]:
        c_L = self.loss_fn.coeff_L.tolist()
        return {f"layer_{layer}": c for layer, c in zip(self.layers, c_L, strict=True)}

    # -- training ----------------------------------------------------------------------------
    def training_step(self, x_BLD: Tensor, batch_idx: int) -> Tensor:
        out = self.sae.train_forward(x_BLD)
        parts = self.loss_fn(x_BLD, out)
        if not torch.isfinite(parts.total):
            finite_L = torch.isfinite(parts.recon_L) & torch.isfinite(parts.sparsity_L)
            bad = [f"layer_{i}" for i, ok in zip(self.layers, finite_L, strict=True) if not ok]
            raise NsaeError(
                f"non-finite loss {parts.total.item()} at step {self.global_step} "
                f"({', '.join(bad) or 'all layers'}); lower optim.lr or check the inputs"
            )
        batch = Batch(x_BLD, out.x_hat_BLD, out.f_BLM, sq_err_BL=parts.sq_err_BL, l1_BL=parts.l1_BL)
        self.recent.update_fired(out.fired_LM)  # every step, noise-free: dead features
        log_step = (self.global_step + 1) % self.trainer.log_every_n_steps == 0
        metrics_step = self.global_step % self.train_every_n_steps == 0
        if metrics_step:
            self.train_metrics.update(batch)
        if metrics_step or log_step:  # self.log costs about 1 ms: not on every step
            self.log("train/loss", parts.total, prog_bar=True)
        if log_step:
            values = self.train_metrics.compute() | {"dead_fraction": self.dead_fraction()}
            self.log_dict(self._flatten("train", values))
            self.train_metrics.reset()
        return parts.total

    def dead_fraction(self) -> Tensor:
        """Per layer: the fraction of features that did not fire in the last
        `metrics.dead_window_tokens` training tokens (over all ranks)."""
        tokens_per_step = self.trainer.datamodule.data.batch_size * self.trainer.world_size
        return self.recent.dead_fraction(-(-self.dead_window_tokens // tokens_per_step))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.sae.before_optimizer_step()

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        optimizer.step(closure=optimizer_closure)
        self.sae.after_optimizer_step()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        betas = tuple(self.optim.betas)
        return torch.optim.Adam(self.sae.parameters(), lr=self.optim.lr, betas=betas)

    # -- validation (every N steps) and final evaluation: noise off, metrics reset ---------
    def validation_step(self, ids_BT: Tensor, batch_idx: int) -> None:
        self._evaluate_batch(ids_BT, splice=False)

    def test_step(self, ids_BT: Tensor, batch_idx: int) -> None:
        self._evaluate_batch(ids_BT, splice=self.splice)

    def _evaluate_batch(self, ids_BT: Tensor, splice: bool) -> None:
        dm = self.trainer.datamodule
        x_NLD, keep_BT = dm.harvest(ids_BT)
        x_hat_NLD, f_NLM = self.sae(x_NLD)
        self.density.update(self.val_metrics.update(x_NLD, x_hat_NLD, f_NLM))
        if not splice:
            return
        lm, ids_BT = dm.harvester, ids_BT.to(x_NLD.device)
        clean = lm.logits(ids_BT)
        for j in range(len(self.layers)):

            def with_recon(a_BTD: Tensor, j: int = j) -> Tensor:
                out = a_BTD.clone()
                out[keep_BT] = x_hat_NLD[:, j].to(a_BTD.dtype)
                return out

            recon = lm.logits(ids_BT, j, with_recon)
            zero = lm.logits(ids_BT, j, torch.zeros_like)
            self.splice_metrics.update(j, ids_BT, clean, recon, zero)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self.eval_results = self._finish_eval("eval")
        self.eval_results["dead_fraction"] = self.dead_fraction()

    def _finish_eval(self, stage: str) -> dict[str, Tensor]:
        values = self.val_metrics.compute()
        if self.splice_metrics.update_count:
            values |= self.splice_metrics.compute()
        density_LM = self.density.compute()
        for metric in (self.val_metrics, self.splice_metrics, self.density):
            metric.reset()
        for name, v_L in values.items():
            for j in (~torch.isfinite(v_L)).nonzero().flatten().tolist():
                rank_zero_warn(
                    f"{stage}/{name} is {v_L[j].item()} on layer_{self.layers[j]} at step "
                    f"{self.global_step}; it is not logged and is null in metrics.json"
                )
        flat = self._flatten(stage, values)
        # The values are already global (the metrics sync their sums); sync_dist only tells
        # Lightning so, averaging identical values across ranks.
        self.log_dict({k: v for k, v in flat.items() if v is not None}, sync_dist=True)
        self._log_density_histograms(stage, density_LM)
        self.eval_density = density_LM
        return values

    def _log_density_histograms(self, stage: str, density_LM: Tensor) -> None:
        """log10 firing frequency per layer, to the loggers that draw histograms."""
        log_density = density_LM.clamp_min(1e-10).log10().cpu()
        for logger in self.loggers:
            exp = logger.experiment
            for j, layer in enumerate(self.layers):
                key = f"{stage}/feature_density/layer_{layer}"
                if hasattr(exp, "add_histogram"):  # TensorBoard
                    exp.add_histogram(key, log_density[j], self.global_step)
                elif type(logger).__name__ == "WandbLogger":
                    import wandb

                    exp.log(
                        {
                            key: wandb.Histogram(log_density[j].numpy()),
                            "trainer/global_step": self.global_step,
                        }
                    )

    def _flatten(self, stage: str, values: dict[str, Tensor]) -> dict[str, float | None]:
        """{stage}/{metric}/layer_{i} and {stage}/{metric}/mean."""
        return {
            f"{stage}/{name}/{key}": v
            for name, row in per_layer_dict(values, self.layers).items()
            for key, v in row.items()
        }
