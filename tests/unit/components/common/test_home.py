"""The home folder: its layout, the run ids that name files in it, folders that cannot be made."""

import pytest

from components.common.errors import ConfigError
from components.common.home import Home, check_run_id


@pytest.mark.parametrize("run_id", ["run-20130101-000000-abc123", "manual.1", "A_b-3"])
def test_run_ids_that_name_one_file_are_accepted(run_id):
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", ".hidden", "", "x" * 129, "a b", "run\n"])
def test_run_ids_that_could_leave_the_home_are_refused(run_id):
    with pytest.raises(ConfigError, match="expected letters, digits"):
        check_run_id(run_id)


def test_a_home_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'file'}: a file is where the home needs a folder"):
        Home(tmp_path / "file").create()
    with pytest.raises(
        ConfigError, match=f"^{tmp_path / 'file' / 'home'}: cannot make the home folder: Not a directory"
    ):
        Home(tmp_path / "file" / "home").create()
