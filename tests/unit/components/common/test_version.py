"""The code's version follows its content: the same files give the same version anywhere,
and any change to the logic, the dataset catalogue or the dependencies' pins gives a new one."""

import shutil

from components import __version__
from components.common.version import LOCK, PACKAGES, code_version, fingerprint
from components.image import IMAGE_REPOSITORY, PIPELINE_IMAGE
from tests.support import PROJECT_ROOT


def copy_of_the_code(folder):
    for package in PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / LOCK).parent.mkdir()
    shutil.copy(PROJECT_ROOT / LOCK, folder / LOCK)
    return folder


def test_a_copy_of_the_code_has_the_same_version(tmp_path):
    assert fingerprint(copy_of_the_code(tmp_path)) == fingerprint(PROJECT_ROOT)
    assert code_version() == f"{__version__}-{fingerprint(PROJECT_ROOT)}"
    assert PIPELINE_IMAGE == f"{IMAGE_REPOSITORY}:{code_version()}"


def test_a_change_to_a_stage_a_schema_or_a_pin_changes_the_version(tmp_path):
    root = copy_of_the_code(tmp_path)
    versions = [fingerprint(root)]
    logic = root / "components" / "push" / "logic.py"
    logic.write_text(logic.read_text() + "\n# a change\n")
    versions.append(fingerprint(root))
    schema = root / "components" / "common" / "datasets" / "flights.schema.pbtxt"
    schema.write_text(schema.read_text() + "\n")
    versions.append(fingerprint(root))
    lock = root / LOCK
    lock.write_text(lock.read_text().replace("\nboto3==", "\nboto3==0.0.0-was-"))
    versions.append(fingerprint(root))
    assert len(set(versions)) == 4


def test_a_compiled_spec_or_a_cache_file_does_not_change_the_version(tmp_path):
    root = copy_of_the_code(tmp_path)
    before = fingerprint(root)
    (root / "pipelines" / "compiled" / "continuous_training.yaml").write_text("changed")
    (root / "components" / "push" / "logic.cpython-311.pyc").write_bytes(b"\0")
    assert fingerprint(root) == before
