import os

import pytest
import torch

# two cores: keep torch from oversubscribing when pytest runs alongside anything else
torch.set_num_threads(int(os.environ.get("FXDROP_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
