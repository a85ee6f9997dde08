"""Data sources and the multitask LightningDataModule."""
