"""What a run directory holds on disk: rows as parquet parts (run_store.py), claims of
several writers (claims.py), the signature that names it (signature.py), and the check
that output folders can be written (writable.py)."""
