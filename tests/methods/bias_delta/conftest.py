"""The tiny transformer the guidance tests of each module run on."""

from __future__ import annotations

import pytest

from guided_transformers import random_transformer



@pytest.fixture(scope="module")
def transformer(request):
    """The tiny transformer of the test module's ``ARCH`` ("qwen" or "flux"), with
    non-trivial weights (guided_transformers.random_transformer)."""
    return random_transformer(request.module.ARCH)
