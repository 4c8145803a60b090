from components.evaluate.logic import OVERALL, Evaluation, evaluate


def test_candidate_and_production_are_scored_on_the_same_rows(trained_model, splits, flights):
    result = evaluate(trained_model, splits[1], flights, trained_model, 4, min_slice_examples=50)
    candidate, production = result.candidate.by_name(), result.production.by_name()
    assert list(candidate)[0] == OVERALL
    assert {"origin=EWR", "origin=JFK", "origin=LGA", "carrier=UA"} <= set(candidate)
    assert all(m.examples >= 50 for m in candidate.values())
    assert candidate == production  # the same model on the same rows
    assert 0.6 < candidate[OVERALL].auc < 1 and candidate[OVERALL].examples == sum(sum(r) for r in result.confusion)
    assert result.production_version == 4
    # DeLong's paired comparison per slice, overall first: the same model differs by exactly nothing.
    assert [c.slice for c in result.comparisons] == list(candidate)
    assert all((c.difference, c.standard_error) == (0.0, 0.0) for c in result.comparisons)
    assert 0 < result.candidate.slices[0].auc_standard_error < 0.05
    assert "| origin=JFK |" in result.markdown() and "production model version 4" in result.markdown()
    assert Evaluation.from_json(result.to_json()) == result


def test_first_model_has_no_production_evaluation(trained_model, splits, flights):
    result = evaluate(trained_model, splits[1], flights)
    assert result.production is None and result.production_version is None and result.comparisons == ()
    assert result.production_note == "first model: nothing in production"


def test_production_model_that_cannot_score_the_rows_is_explained(trained_model, penguin_model, splits, flights):
    result = evaluate(trained_model, splits[1], flights, penguin_model, 2)
    assert result.production is None
    assert result.production_note.startswith("production model version 2 cannot score these rows: feature(s)")
    assert "bill_length_mm" in result.production_note


def test_the_eval_split_is_scored_a_batch_at_a_time_with_the_same_result(trained_model, splits, flights, monkeypatch):
    """Memory holds one batch of features; the evaluation is the one of the whole split at once."""
    from components.evaluate import logic

    whole = evaluate(trained_model, splits[1], flights, trained_model, 4, min_slice_examples=50)
    read = []
    batches = logic.read_parquet_batches
    monkeypatch.setattr(logic, "EVAL_BATCH_ROWS", 97)
    monkeypatch.setattr(logic, "read_parquet_batches", lambda *args: (read.append(len(b)) or b for b in batches(*args)))
    batched = evaluate(trained_model, splits[1], flights, trained_model, 4, min_slice_examples=50)
    assert max(read) == 97 and sum(read) == whole.candidate.by_name()[OVERALL].examples > 97 * 3
    assert batched.to_json() == whole.to_json()
