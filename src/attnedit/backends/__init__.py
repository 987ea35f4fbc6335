"""Model families: how each loads, samples or edits, and exposes its attention layers."""
