"""Local runs: one at a time per home; a home keeps the runner it was run with."""

import pytest

from components.common.errors import ConfigError
from components.common.home import Home
from pipelines.local_run import claim_home
from pipelines.pods import container_home


def test_a_home_is_run_with_the_runner_it_was_run_with(tmp_path):
    """Its records name paths as the steps saw them: here, or at /var/lib/ct in containers."""
    home = Home(tmp_path / "home")
    claim_home(home, home)
    claim_home(home, home)  # again the same: fine
    with pytest.raises(ConfigError, match=r"at .*/home; this runner's steps see it at /var/lib/ct: use the same"):
        claim_home(home, container_home(home))
    other = Home(tmp_path / "other")
    claim_home(other, container_home(other))
    with pytest.raises(ConfigError, match="recorded paths as their steps saw the home, at /var/lib/ct"):
        claim_home(other, other)


def test_a_second_ct_run_on_a_held_home_fails_at_once_naming_the_holder(tmp_path, data_root, capsys):
    """Two `ct run` on one home would both judge themselves the first model: the second is refused."""
    from components.common.metadata import MetadataStore
    from pipelines.cli import main
    from tests.support.homes import hold_home

    home = Home(tmp_path / "home").create()
    holder = hold_home(home.lock_file, "run-first")
    try:
        code = main(["run", "--data-root", str(data_root), "--home", str(home.root), "--run-id", "run-second"])
    finally:
        holder.kill()
        holder.wait()
    error = capsys.readouterr().err
    assert code == 1 and error.startswith(f"ct run: {home.root}: the home is in use by `ct run` for run run-first")
    assert f"pid {holder.pid}" in error and "Traceback" not in error
    assert "run-second" not in {run.run_id for run in MetadataStore(home.metadata_connection).runs()}
