import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_cache_dir(tmp_path_factory):
    """Every data test caches (demo dataset, fingerprints, preprocessed arrays) in a temporary folder."""
    old = os.environ.get("EMONAS_CACHE_DIR")
    path = tmp_path_factory.mktemp("emonas-cache")
    os.environ["EMONAS_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EMONAS_CACHE_DIR", None)
    else:
        os.environ["EMONAS_CACHE_DIR"] = old
