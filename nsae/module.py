"""The LightningModule: owns the SAE bank, the loss, the metrics and the optimizer."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from nsae import rng
from nsae.data.norms import input_scales, mean_norms
from nsae.errors import NsaeError
from nsae.evaluation import Evaluator
from nsae.loss import SAELoss, layer_coefficients
from nsae.metrics import Batch, RecentFiring, SAEMetrics, per_layer_dict
from nsae.resample import broadcast_from_rank0, resample_dead
from nsae.schedule import coeff_factor, lr_factor


class SAEModule(L.LightningModule):
    """Trains the SAE bank on activation batches [B, L, D]; validates and evaluates on
    held-out contexts [B, T] that it harvests through the datamodule (noise off).

    Input scales (`data.normalize_activations`): the SAE trains on s_l x (the norm sample's
    "input_scale" rows; training metrics are in those units). Every evaluation is in raw
    units: validation folds 1/s_l into the SAE (`SAE.rescale_layer_`) and restores the
    training weights exactly afterwards; the final evaluation folds it for good, so the
    exported SAE maps raw x to raw x_hat."""

    def __init__(
        self,
        sae: Any,
        layers: list[int],
        normalization_method: str,
        coeff: Any,
        optim: Any,
        metrics: Any,
        init_b_dec: str = "mean",
        resample: Any = None,
    ) -> None:
        super().__init__()
        self.resample_cfg = resample or {}
        self._last_batch: Tensor | None = None
        self.sae, self.layers, self.coeff, self.optim = sae, list(layers), coeff, optim
        self.init_b_dec, self.splice = init_b_dec, bool(metrics.splice)
        L_, D, M = sae.n_layers, sae.d_model, sae.n_features
        self.loss_fn = SAELoss(normalization_method, torch.zeros(L_))
        self.train_metrics = SAEMetrics(list(metrics.train), L_, D, M)
        self.evaluator = Evaluator(sae, list(metrics.eval))  # validation and final evaluation
        self.recent = RecentFiring(L_, D, M)  # for dead_fraction over recent training tokens
        self.recent.persistent(True)  # in checkpoints: a resumed run counts the same
        self._rng_to_restore: dict[str, Any] | None = None
        self.dead_window_tokens = int(metrics.dead_window_tokens)
        # Training metrics (a running estimate; the final evaluation is exact) use every
        # n-th step's batch, which keeps their cost off most steps.
        self.train_every_n_steps = int(metrics.get("train_every_n_steps", 1))
        self.eval_results: dict[str, Tensor] = {}
        self.eval_density: Tensor | None = None
        # Set once from the norm statistics; restored from checkpoints, never re-estimated.
        self.register_buffer("initialized", torch.tensor(False))
        # s_l per layer, from the datamodule's norm statistics in every stage (not saved).
        self.register_buffer("input_scale_L", torch.ones(L_), persistent=False)
        self.scaled = False  # some s_l != 1: training inputs are s_l x
        self.folded = False  # the SAE is in raw units (1/s_l folded in)
        self._train_state: dict[str, Any] | None = None  # unfolded weights, in validation

    # -- set-up from the data's norm statistics (before DDP wraps the module) -------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        self.evaluator.prepare(dm, self.layers)
        s_L = input_scales(dm.norm_stats, self.layers)
        self.input_scale_L.copy_(s_L)
        self.scaled = bool((s_L != 1).any())
        if stage != "fit" or bool(self.initialized):
            return
        n_L = mean_norms(dm.norm_stats, self.layers) * s_L  # of the inputs the SAE sees
        c_L = layer_coefficients(
            self.coeff.mode,
            self.coeff.alpha,
            self.loss_fn.p,
            n_L,
            self.coeff.get("k"),
            self.sae.sparsity_scaling,
        )
        self.loss_fn.coeff_L.copy_(c_L)
        sample_NLD = dm.norm_sample.to(self.sae.b_dec_LD.device)
        self.sae.init_b_dec(sample_NLD * s_L.to(sample_NLD.device)[:, None], self.init_b_dec)
        self.initialized.fill_(True)

    @property
    def coefficients(self) -> dict[str, float]:
        c_L = self.loss_fn.coeff_L.tolist()
        return {f"layer_{layer}": c for layer, c in zip(self.layers, c_L, strict=True)}

    # -- training ----------------------------------------------------------------------------
    def training_step(self, x_BLD: Tensor, batch_idx: int) -> Tensor:
        if self.scaled:
            x_BLD = x_BLD * self.input_scale_L[:, None]
        self._last_batch = x_BLD  # the inputs a resample draws from (see optimizer_step)
        out = self.sae.train_forward(x_BLD)
        parts = self.loss_fn(x_BLD, out, self.coeff_scale())
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
            # (a run resumed between two metrics steps may have none in this window)
            seen = any(m.update_count for m in self.train_metrics.metrics.values())
            values = self.train_metrics.compute() if seen else {}
            values["dead_fraction"] = self.dead_fraction()
            values["coeff"] = self.loss_fn.coeff_L * self.coeff_scale()  # the effective c_l
            flat = self._flatten("train", values)
            self.log_dict({k: v for k, v in flat.items() if v is not None})
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
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
        every = int(self.resample_cfg.get("every_steps", 0))
        if every and (self.global_step + 1) % every == 0 and self._last_batch is not None:
            counts = resample_dead(
                self.sae,
                optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                self._last_batch,
                self.recent.dead_mask(every).to(self._last_batch.device),
                float(self.resample_cfg.get("encoder_scale", 0.2)),
            )
            broadcast_from_rank0(self.sae)
            self.sae.after_optimizer_step()  # keep the decoder constraint
            resampled = zip(self.layers, counts, strict=True)
            self.log_dict({f"train/resampled/layer_{i}": float(c) for i, c in resampled})

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam at optim.lr, scaled per step by `nsae.schedule.lr_factor`."""
        betas = tuple(self.optim.betas)
        opt = torch.optim.Adam(self.sae.parameters(), lr=self.optim.lr, betas=betas)
        total, o = self.trainer.max_steps, self.optim
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: lr_factor(
                step,
                total,
                int(o.get("warmup_steps", 0)),
                str(o.get("decay", "none")),
                float(o.get("min_lr_ratio", 0.0)),
            ),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def coeff_scale(self) -> float:
        """The sparsity-coefficient warm-up factor at this step."""
        return coeff_factor(self.global_step, int(self.coeff.get("warmup_steps", 0)))

    # -- exact resume: the random state of the training noise travels with the checkpoint --
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nsae_rng"] = rng.get_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("nsae_rng")

    def on_train_start(self) -> None:
        """Restore the checkpoint's random state right before the first resumed step."""
        state, self._rng_to_restore = self._rng_to_restore, None
        if state is not None:
            rng.set_state(state, self.device)

    # -- validation (every N steps) and final evaluation: noise off, metrics reset ---------
    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self.evaluator.update(self.trainer.datamodule, batch, splice=False)

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self.evaluator.update(self.trainer.datamodule, batch, splice=self.splice)

    def fold_input_scale(self) -> None:
        """Fold 1/s_l into each layer (`SAE.rescale_layer_`): on raw x the SAE then computes
        x_hat / s_l, the raw-unit reconstruction, of what it computed on s_l x."""
        if self.scaled and not self.folded:
            for j, s in enumerate(self.input_scale_L.tolist()):
                self.sae.rescale_layer_(j, 1.0 / s)
        self.folded = True

    def on_validation_epoch_start(self) -> None:
        if self.scaled and not self.folded:
            self._train_state = copy.deepcopy(self.sae.state_dict())  # (+ extra state)
            self.fold_input_scale()
        self.evaluator.start()

    def on_test_epoch_start(self) -> None:
        self.fold_input_scale()  # for good: the test ends training, the export follows
        self.evaluator.start()

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")
        self.restore_training_weights()

    def restore_training_weights(self) -> None:
        """After a validation: the unfolded training weights back, bit for bit."""
        if self._train_state is not None:
            self.sae.load_state_dict(self._train_state)
            self._train_state, self.folded = None, False

    def on_test_epoch_end(self) -> None:
        self.eval_results = self._finish_eval("eval")
        self.eval_results["dead_fraction"] = self.dead_fraction()

    def _finish_eval(self, stage: str) -> dict[str, Tensor]:
        values, density_LM = self.evaluator.finish(self.layers)
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

    @torch.no_grad()
    def evaluate_tokens(self, x_NLD: Tensor, chunk: int = 4096) -> dict[str, Tensor]:
        """L0 and explained variance of the SAE (noise off) on given activations, e.g.
        training-split tokens, to compare with the held-out evaluation."""
        metrics = SAEMetrics(["l0", "explained_variance"], *self._shape()).to(self.device)
        for metric in metrics.metrics.values():  # this rank's tokens only (rank 0 calls it)
            metric.sync_on_compute = metric._to_sync = False
        was_training = self.sae.training
        self.sae.eval()
        for x_BLD in x_NLD.split(chunk):
            x_BLD = x_BLD.to(self.device)
            metrics.update(x_BLD, *self.sae(x_BLD))
        self.sae.train(was_training)
        return metrics.compute()

    def _shape(self) -> tuple[int, int, int]:
        return self.sae.n_layers, self.sae.d_model, self.sae.n_features

    def binned_results(self) -> dict[str, Any]:
        """metrics.json's norm-binned sections ("by_norm_decile", "l0_norm_slope", and for a
        synthetic source "ground_truth_by_norm_decile") of the last evaluation."""
        return self.evaluator.sections

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
