"""The data side: source models and hook sites, text streams, the shuffle buffer, norm
statistics, and the LightningDataModule that ties them together."""
