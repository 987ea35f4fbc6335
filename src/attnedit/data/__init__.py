"""Datasets: generated samples from seeds, real image folders, PIE-Bench."""
