import pytest

from dmcbook.stats import compare_runs, paired_difference, seed_of, verdict


def test_paired_difference_matches_a_hand_computed_t_interval():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.4841
    d = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 9: 50.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert d["seeds"] == [0, 1, 2]
    assert (d["mean"], d["std"]) == (2.0, 1.0)
    assert d["low"] == pytest.approx(2 - 2.4841, abs=1e-3) and d["high"] == pytest.approx(2 + 2.4841, abs=1e-3)


def test_pairing_removes_the_shared_seed_effect():
    # Seeds move both configurations together by +-5 points; the model is always 0.5 better.
    base = {0: 80.0, 1: 85.0, 2: 90.0}
    d = paired_difference({s: v + 0.5 for s, v in base.items()}, base)
    assert d["low"] == pytest.approx(0.5) and d["high"] == pytest.approx(0.5)
    assert verdict(d) == "supported" and verdict(d, paper_says_better=False) == "contradicted"


def test_an_interval_through_zero_is_not_resolved():
    d = paired_difference({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d["low"] < 0 < d["high"] and verdict(d) == "not resolved at this budget"
    # Two seeds: t(0.975, 1) = 12.7 makes even a consistent 1.25-point gap unresolved; three resolve it.
    assert verdict(paired_difference({0: 0.0, 1: 0.0}, {0: 1.0, 1: 1.5})) == "not resolved at this budget"
    assert verdict(paired_difference({0: 0.0, 1: 0.0, 2: 0.0}, {0: 1.0, 1: 1.2, 2: 1.1})) == "contradicted"


def test_compare_runs_pairs_by_seed_and_skips_unfinished():
    runs = {f"fm-{m}-seed{s}": {"status": "finished", "final_test_acc": acc}
            for m, accs in {"v5": [0.90, 0.91, 0.92], "resnet18": [0.88, 0.885, 0.90]}.items()
            for s, acc in enumerate(accs)}
    runs["fm-v5-seed3"] = {"status": "running", "final_test_acc": 0.1}
    row = compare_runs(runs, "fm-v5", "fm-resnet18")
    assert row["seeds"] == 3 and row["difference (points)"] == pytest.approx(13 / 6, abs=0.01)


@pytest.mark.parametrize("call, message", [
    (lambda: paired_difference({0: 1.0}, {0: 2.0}), "at least two shared seeds"),
    (lambda: paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}, confidence=95), "confidence"),
    (lambda: seed_of("fm-v5"), "does not end in -seed"),
])
def test_bad_input_says_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
