"""nsae's Hydra launcher plugin (hydra/launcher=nsae_bank; the work is in nsae.cohort)."""
