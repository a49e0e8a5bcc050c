import pytest


@pytest.fixture(scope="session", autouse=True)
def data_cache_dir(tmp_path_factory):
    """Every data test caches (demo dataset, fingerprints, preprocessed arrays) in a temporary folder."""
    path = tmp_path_factory.mktemp("emonas-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMONAS_CACHE_DIR", str(path))
        yield path
