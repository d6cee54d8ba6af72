"""Fixtures shared by the agent assist tests."""

import pytest

from patchstream.model.engines import build_text_models


@pytest.fixture(scope="package")
def models():
    """The assist extra's text models, loaded once (skips where the extra is not installed)."""
    models = build_text_models()
    if models.embedder is None or models.sentiment is None:
        pytest.skip(f"the assist extra is not installed: {models.missing}")
    return models
