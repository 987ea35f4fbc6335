"""Running studies: the loop that edits and scores cases into a run directory
(runner.py), what a failed case becomes (failures.py), provenance and cost (manifest.py),
the numerical floor, progress of sharded runs, work units, rescore and reproduce, secret
redaction, W&B tracking and Hydra's callbacks."""
