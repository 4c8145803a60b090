import json

import pytest

from components.common.errors import ConfigError
from components.common.model_repository import HIGHEST_RETIRED, MANIFEST, published_versions, retire
from components.infra_validate.logic import InfraBlessing
from components.push.logic import push
from components.validate_model.logic import Check, ModelBlessing

FLOOR = "floor: the candidate's AUC (point estimate) at least 0.65"
BLESSED = ModelBlessing(
    True,
    (Check("AUC at least", "overall", 0.7, None, 0.65, True, (0.68, 0.72), None, FLOOR),),
    None,
    "first model",
    0.9,
)
NOT_BLESSED = ModelBlessing(
    False,
    (Check("AUC at least", "overall", 0.6, None, 0.65, False, (0.58, 0.62), None, FLOOR),),
    None,
    "first model",
    0.9,
)
INFRA_BLESSED = InfraBlessing(True, (("loads in a fresh process", True, "1.0 s"),), 1.0, 1.0)
INFRA_NOT_BLESSED = InfraBlessing(False, (("answers every request", False, "0/21 answered"),), 1.0, 1.0)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "candidate"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"weights")
    return folder


def test_blessed_models_get_consecutive_versions(model_dir, tmp_path):
    repository = tmp_path / "models"
    first = push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay", "run-1")
    second = push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay", "run-2")
    assert (first.version, second.version) == (1, 2)
    assert published_versions(repository, "flight-delay") == [1, 2]
    assert (repository / "flight-delay" / "2" / "variables" / "variables.index").read_bytes() == b"weights"
    manifest = json.loads((repository / "flight-delay" / "2" / MANIFEST).read_text())
    assert manifest["version"] == 2 and manifest["run_id"] == "run-2"
    assert [p.name for p in (repository / "flight-delay").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "blessing, infra, reason",
    [
        (
            NOT_BLESSED,
            INFRA_BLESSED,
            "not blessed: AUC at least on overall: 0.6000 (interval 0.5800 to 0.6200), threshold 0.65: FAILED",
        ),
        (BLESSED, INFRA_NOT_BLESSED, "not infra-blessed: answers every request: 0/21 answered"),
    ],
)
def test_unblessed_models_are_refused_and_production_is_untouched(model_dir, tmp_path, blessing, infra, reason):
    repository = tmp_path / "models"
    push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay")
    before = sorted(p.relative_to(repository) for p in repository.rglob("*"))
    result = push(model_dir, blessing, infra, repository, "flight-delay")
    assert not result.pushed and result.version is None
    assert result.reasons == (reason,)
    assert sorted(p.relative_to(repository) for p in repository.rglob("*")) == before


def test_a_failed_copy_publishes_nothing(tmp_path):
    repository = tmp_path / "models"
    with pytest.raises(FileNotFoundError):
        push(tmp_path / "missing", BLESSED, INFRA_BLESSED, repository, "flight-delay")
    assert published_versions(repository, "flight-delay") == []
    assert list((repository / "flight-delay").iterdir()) == []


def test_a_numbered_folder_without_manifest_is_neither_a_version_nor_overwritten(model_dir, tmp_path):
    repository = tmp_path / "models"
    (repository / "flight-delay" / "1").mkdir(parents=True)
    (repository / "flight-delay" / "1" / "notes.txt").write_text("not ours")
    assert published_versions(repository, "flight-delay") == []
    assert push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay").version == 2
    assert (repository / "flight-delay" / "1" / "notes.txt").read_text() == "not ours"


def test_a_retired_version_number_is_never_given_again(model_dir, tmp_path):
    repository = tmp_path / "models"
    for _ in range(3):
        push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay")
    retire(repository / "flight-delay" / "3")
    retire(repository / "flight-delay" / "1")  # an older one does not lower the mark
    assert published_versions(repository, "flight-delay") == [2]
    assert push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay").version == 4
    retire(repository / "flight-delay" / "4")
    retire(repository / "flight-delay" / "2")  # every version gone: still numbered past them
    assert push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay").version == 5


def test_a_damaged_retired_record_is_named_and_nothing_is_published(model_dir, tmp_path):
    repository = tmp_path / "models"
    push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay")
    record = repository / "flight-delay" / HIGHEST_RETIRED
    record.write_text("three")
    with pytest.raises(ConfigError, match=f"{record}: expected the highest retired version number, found 'three'"):
        push(model_dir, BLESSED, INFRA_BLESSED, repository, "flight-delay")
    assert published_versions(repository, "flight-delay") == [1]
