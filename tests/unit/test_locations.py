"""Where a request may point: the operator's roots, symlinks resolved, no `..` in keys."""

import pytest

from services.config import Settings
from services.locations import check_request, under
from services.messages import TrainingRequest


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "data" / "lote-1").mkdir(parents=True)
    (tmp_path / "data" / "escape").symlink_to("/etc")
    return Settings(home=tmp_path / "home", store_url="s3://models/colecionador",
                    dataset_roots=f"{tmp_path / 'data'},s3://datasets/in")


@pytest.mark.parametrize("where,allowed", [
    ("{data}/lote-1", True), ("file://{data}/lote-1", True), ("{data}", True),
    ("/etc", False), ("/", False), ("{data}/../", False), ("{data}/escape", False),
    ("{data}-other", False), ("s3://datasets/in/lote-1/", True), ("s3://datasets/in", True),
    ("s3://datasets/inside/", False), ("s3://datasets/in/../secret/", False),
    ("s3://other/in/lote-1/", False), ("http://example/x", False),
])
def test_under_the_roots(settings, tmp_path, where, allowed):
    where = where.format(data=tmp_path / "data")
    assert under(where, settings.data_roots()) is allowed


def test_weights_may_be_a_name_a_stored_model_or_under_a_root(settings, tmp_path):
    def request(weights):
        return TrainingRequest(batch_id="b", dataset_uri="s3://datasets/in/x/",
                               hyperparameters={"weights": weights})
    for ok in ("imagenet", "IMAGENET1K_V2", "s3://models/colecionador/models/m/v1/model.pt",
               f"{tmp_path}/data/w.pt"):
        check_request(request(ok), settings)
    with pytest.raises(ValueError, match="^hyperparameters.weights: '/etc/passwd' is not"):
        check_request(request("/etc/passwd"), settings)
    with pytest.raises(ValueError, match="^dataset_uri: '/etc' is not under an allowed root"):
        check_request(TrainingRequest(batch_id="b", dataset_uri="/etc"), settings)
