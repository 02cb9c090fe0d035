import pytest

from tests.pipelines.helpers import CLICK_FEATURES


@pytest.fixture(scope="module")
def click_features():
    import shardforge.features as sf

    return sf.load_feature_set(CLICK_FEATURES)
