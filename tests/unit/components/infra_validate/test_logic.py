from components.infra_validate.logic import InfraBlessing, infra_validate


def test_model_answers_real_rows_in_a_fresh_process(trained_model, splits, flights):
    blessing = infra_validate(
        trained_model, splits[1], flights, production_dir=trained_model, single_requests=5, batch_rows=50
    )
    assert blessing.blessed, blessing.checks
    checks = {name: (passed, detail) for name, passed, detail in blessing.checks}
    assert checks["answers every request"] == (True, "6/6 answered")
    assert checks["probabilities in [0, 1]"] == (True, "55 predictions")
    assert checks["signature same as production"] == (True, "identical")
    assert blessing.load_seconds > 0 and blessing.p50_ms > 0
    assert InfraBlessing.from_json(blessing.to_json()) == blessing


def test_signature_change_against_production_is_refused(trained_model, penguin_model, splits, flights):
    blessing = infra_validate(
        trained_model, splits[1], flights, production_dir=penguin_model, single_requests=1, batch_rows=5
    )
    assert not blessing.blessed
    [reason] = blessing.reasons
    assert reason.startswith("signature same as production: input 'bill_depth_mm' missing (was float32)")


def test_model_that_does_not_take_the_dataset_features_is_refused(penguin_model, splits, flights):
    blessing = infra_validate(penguin_model, splits[1], flights, single_requests=1, batch_rows=5)
    assert not blessing.blessed
    assert "0/2 answered; first error: feature 'island': missing (a string value is required)" in blessing.reasons[0]


def test_model_that_does_not_load_is_refused(tmp_path, splits, flights):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a model")
    blessing = infra_validate(tmp_path / "broken", splits[1], flights, single_requests=1, batch_rows=5)
    assert not blessing.blessed
    assert blessing.reasons[0].startswith("loads in a fresh process: OSError: Cannot parse file")
