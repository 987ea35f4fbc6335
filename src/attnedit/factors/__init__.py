"""Ground truth for direction discovery on the procedural shapes data: a factor
regressor (what generated images show), an analysis-by-synthesis fit (checks it without
labels), and the factor benchmark (which factors a direction changes)."""
