"""The converged comparisons (issue 12): the plan builds, runs are made once and read back, a
close call earns two more seeds, and claims get verdicts only with all their seeds."""
import json
import time

import numpy as np
import pytest

from dmcbook import campaign
from dmcbook.campaign import Claim, Spec
from dmcbook.models.registry import create_model
from dmcbook.train import RECIPES, Recipe, Trainer, get_recipe, precision_name, select_precision


def test_every_planned_configuration_builds_and_every_claim_is_planned():
    variants = [spec.variant for spec in campaign.PLAN]
    assert len(variants) == len(set(variants))
    for spec in campaign.PLAN:
        create_model(spec.model, 10, 1, "cifar", width=get_recipe("converge").width, **spec.options)  # or raises
        assert spec.chapters and set(spec.chapters) <= set(campaign.CHAPTERS)
    for claim in campaign.CLAIMS:
        assert {claim.variant, claim.baseline} <= set(variants), claim
        assert claim.chapter in {c for s in campaign.PLAN if s.variant in (claim.variant, claim.baseline)
                                 for c in s.chapters}
    with pytest.raises(ValueError, match="unknown chapter"):
        campaign.specs("06_nothing")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A two-configuration plan on digits, a few seconds a run, filed under tmp_path."""
    monkeypatch.setitem(RECIPES, "converge", Recipe("converge", epochs=1, batch_size=32, width=4,
                                                    train_subset=64, test_subset=64, augment="none"))
    monkeypatch.setattr(campaign, "DATASET", "digits")
    monkeypatch.setattr(campaign, "PLAN", (Spec("resnet18", "resnet18", chapters=("04_drstn",)),
                                           Spec("drstn_v5", "drstn_v5", chapters=("04_drstn", "05_head_to_head"))))
    monkeypatch.setattr(campaign, "CHAPTERS", ("04_drstn", "05_head_to_head"))
    monkeypatch.setattr(campaign, "CLAIMS", (Claim("04_drstn", "drstn_v5", "resnet18", "test"),))
    # whatever precision this machine trains in, the tiny campaign's runs all share it
    monkeypatch.setattr(campaign, "PRECISION", precision_name(select_precision("cpu", "auto")))
    return tmp_path


def test_runs_are_made_once_in_plan_order_and_read_back(tiny, monkeypatch):
    assert campaign.collect(root=tiny) == ({}, [f"{v}-seed{s}" for v in ("resnet18", "drstn_v5") for s in (0, 1, 2)])
    trained = campaign.run("05_head_to_head", seeds=(0, 1), root=tiny, say=lambda *_: None)
    assert trained == ["drstn_v5-seed0", "drstn_v5-seed1"]
    history = json.loads((tiny / "campaign" / "converge" / "drstn_v5-seed1" / "history.json").read_text())
    assert history["status"] == "finished" and history["config"]["seed"] == 1
    assert history["config"]["recipe"]["name"] == "converge" and history["config"]["dataset"] == "digits"
    done, pending = campaign.collect("05_head_to_head", seeds=(0, 1), root=tiny)
    assert sorted(done) == ["drstn_v5-seed0", "drstn_v5-seed1"] and pending == []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: pytest.fail("a finished run was retrained"))
    assert campaign.run("05_head_to_head", seeds=(0, 1), root=tiny, say=lambda *_: None) == []


def test_a_finished_runs_best_weights_ship_and_rebuild_its_network(tiny):
    import torch
    from dmcbook.train import CheckpointError, load_checkpoint
    with pytest.raises(ValueError, match="has not finished"):
        campaign.ship_best_weights("drstn_v5-seed0", root=tiny)
    campaign.run("05_head_to_head", seeds=(0,), root=tiny, say=lambda *_: None)
    with pytest.raises(CheckpointError, match="ships no weights"):
        campaign.trained_network("drstn_v5-seed0", root=tiny)
    folder = tiny / "campaign" / "converge" / "drstn_v5-seed0"
    record = campaign.ship_best_weights("drstn_v5-seed0", root=tiny)
    history = json.loads((folder / "history.json").read_text())
    assert history["weights"] == record and record["epoch"] == history["best_epoch"] == 1
    net, shipped_history = campaign.trained_network("drstn_v5-seed0", root=tiny)
    best = create_model("drstn_v5", 10, 1, "cifar", width=4)
    load_checkpoint(folder / "best.pt", best)
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():  # the trained BN statistics and weights, to fp16's precision
        assert not net.training and torch.allclose(net(x), best.eval()(x), atol=2e-2)
        assert not torch.allclose(net(x), create_model("drstn_v5", 10, 1, "cifar", width=4).eval()(x), atol=2e-2)
    (folder / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="not in this checkout"):
        campaign.ship_best_weights("drstn_v5-seed0", root=tiny)


def test_a_run_held_by_another_process_is_skipped_not_shared(tiny):
    import os
    import socket
    held = tiny / "campaign" / "converge" / "resnet18-seed0"
    held.mkdir(parents=True)
    (held / ".lock").write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process
    said = []
    trained = campaign.run("04_drstn", seeds=(0,), root=tiny, say=said.append)
    assert trained == ["drstn_v5-seed0"]
    assert any("resnet18-seed0: skipped" in line and "in use" in line for line in said)
    assert not (held / "history.json").exists()


def fake_runs(finals: dict) -> dict:
    """Histories with only what the comparisons read: variant -> per-seed final accuracies (%)."""
    return {f"{v}-seed{s}": {"status": "finished", "final_test_acc": acc / 100, "environment": {"device": "cpu"}}
            for v, accs in finals.items() for s, acc in enumerate(accs)}


def test_runs_are_grouped_by_the_data_they_trained_on():
    runs = fake_runs({"resnet18": [90.0, 91.0], "digits-scratch": [99.0]})
    for name, history in runs.items():
        history["config"] = {"dataset": "digits" if name.startswith("digits") else "fashion-mnist"}
    grouped = campaign.by_dataset(runs)
    assert list(grouped) == ["digits", "fashion-mnist"]
    assert sorted(grouped["fashion-mnist"]) == ["resnet18-seed0", "resnet18-seed1"]
    assert list(grouped["digits"]) == ["digits-scratch-seed0"]


def test_a_close_call_earns_two_more_seeds_and_a_clear_gap_does_not(tiny):
    spec = campaign.PLAN[1]
    close = fake_runs({"resnet18": [90.0, 91.0, 92.0], "drstn_v5": [90.5, 91.2, 91.9]})
    clear = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]})
    assert campaign.wanted_seeds(spec, close) == (0, 1, 2, 3, 4)
    assert campaign.wanted_seeds(spec, clear) == (0, 1, 2)
    assert campaign.wanted_seeds(spec, fake_runs({"resnet18": [90.0, 91.0]})) == (0, 1, 2)


def test_a_transfer_source_gets_the_extra_seeds_its_transfer_needs():
    def digits(variant, first, finals):
        return {f"{variant}-seed{s}": {"status": "finished", "final_test_acc": acc / 100,
                                       "epochs": [{"test_acc": first / 100}]}
                for s, acc in enumerate(finals)}
    clear = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3],
                       "drstn_v1": [88.0, 88.1, 88.2]})
    source = next(spec for spec in campaign.PLAN if spec.variant == "drstn_v5")
    assert campaign.wanted_seeds(source, clear) == (0, 1, 2)
    close = clear | digits("digits-scratch", 10.0, [99.2, 99.4, 99.7]) \
        | digits("digits-transfer", 60.0, [99.4, 99.7, 99.4])
    assert campaign.wanted_seeds(source, close) == (0, 1, 2, 3, 4)


def test_claims_get_a_verdict_only_with_all_their_seeds(tiny):
    rows = campaign.comparisons(fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]}))
    assert rows[0]["verdict"] == "supported" and rows[0]["seeds"] == 3
    assert rows[0]["difference (points)"] == pytest.approx(2.03, abs=0.01)
    worse = campaign.comparisons(fake_runs({"resnet18": [92.0, 92.1, 92.3], "drstn_v5": [90.0, 90.2, 90.1]}))
    assert worse[0]["verdict"] == "contradicted"
    partial = campaign.comparisons(fake_runs({"resnet18": [92.0, 92.1, 92.3], "drstn_v5": [90.0]}))
    assert partial[0]["verdict"].startswith("pending") and partial[0]["seeds"] == "1 / 3 of 3"


def test_plateau_is_the_gain_of_the_last_epochs():
    history = {"epochs": [{"test_acc": a} for a in (0.80, 0.90, 0.925, 0.931, 0.932)]}
    assert campaign.plateau(history) == pytest.approx(0.7)
    assert campaign.plateau(history, last=1) == pytest.approx(0.1)


def test_pareto_front_keeps_only_models_nothing_beats_on_both_axes():
    rows = [dict(model="a", macs=10, speed=900, acc=90.0), dict(model="b", macs=20, speed=500, acc=92.0),
            dict(model="c", macs=30, speed=800, acc=91.0), dict(model="d", macs=40, speed=100, acc=93.0),
            dict(model="e", macs=10, speed=950, acc=89.0), dict(model="f", macs=None, speed=None, acc=99.0)]
    assert campaign.pareto(rows, "macs") == ["a", "b", "d"]  # f's cost is unknown: it cannot be placed  # c costs more than b and is worse; e ties a's cost
    # by speed: e is fastest, a faster and better, c slower than a but better, then b and d
    assert campaign.pareto(rows, "speed", higher_is_better=True) == ["e", "a", "c", "b", "d"]


def test_head_to_head_rows_carry_costs_speed_and_seed_statistics(tiny):
    runs = fake_runs({"drstn_v5": [90.0, 92.0], "resnet18": [91.0]})
    # epochs slowed by other work on the machine do not count: the fastest of any seed does
    for history, speeds in zip(runs.values(), ([100, 300], [240, 200], [50, 50])):
        history["epochs"] = [{"images_per_sec": s} for s in speeds]
    rows = campaign.head_to_head(runs, "04_drstn", step_ratios={"resnet18": 1.0, "drstn_v5": 1.06})
    assert [r["model"] for r in rows] == ["resnet18", "drstn_v5"]
    v5 = rows[1]
    assert v5["step time ×"] == 1.06 and campaign.head_to_head(runs, "04_drstn")[1]["step time ×"] is None
    assert v5["train img/s"] == 300 and rows[0]["train img/s"] == 50 and v5["seeds"] == 2 and v5["acc"] == pytest.approx(91.0)
    assert v5["std"] == pytest.approx(2 ** 0.5)
    assert v5 | campaign.costs(campaign.PLAN[1]) == v5 and rows[0]["std"] == 0.0
    assert v5["MMACs"] < rows[0]["MMACs"]  # V5 drops ResNet-18's last stage
    # planned: a configuration with no finished run has its costs and no accuracy, off the front
    v5_only = {n: h for n, h in runs.items() if n.startswith("drstn_v5")}
    assert [r["model"] for r in campaign.head_to_head(v5_only, "04_drstn")] == ["drstn_v5"]
    planned = {r["model"]: r for r in campaign.head_to_head(v5_only, "04_drstn", planned=True)}
    assert planned["resnet18"]["acc"] is None and planned["resnet18"]["seeds"] == 0
    assert planned["resnet18"]["MMACs"] == rows[0]["MMACs"] and planned["drstn_v5"] == v5 | {"step time ×": None}
    assert campaign.pareto(list(planned.values()), "MMACs") == ["drstn_v5"]


def test_tradeoff_plot_draws_a_panel_per_cost_and_the_front_through_its_models():
    import matplotlib
    matplotlib.use("Agg")
    from dmcbook import viz
    rows = [dict(model="a", macs=10, acc=90.0, std=0.5), dict(model="b", macs=20, acc=92.0, std=0.2),
            dict(model="c", macs=30, acc=91.0, std=0.4), dict(model="d", macs=None, acc=95.0, std=0.1)]
    fig = viz.plot_tradeoff(rows, {"macs": "MACs"}, lambda key: campaign.pareto(rows, key))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]  # d's cost is unknown: no point
    front = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(front) == 1 and list(front[0].get_xdata()) == [10, 20] and list(front[0].get_ydata()) == [90.0, 92.0]
    assert viz.fits_page(fig) and ax.get_xscale() == "log"
    # three panels a page wide, as the head-to-head chapter draws them: every label inside its panel
    wide = [dict(model=f"network{i}", p=cost, q=cost, s=cost, acc=90.0 + i, std=0.1)
            for i, cost in enumerate((1.0, 1.24, 1.85, 5.09, 5.7))]
    fig = viz.plot_tradeoff(wide, {"p": "P", "q": "Q", "s": "S"}, lambda key: campaign.pareto(wide, key))
    fig.canvas.draw()  # the constrained layout places the panels at drawing time
    renderer = fig.canvas.get_renderer()
    for panel in fig.axes:
        box = panel.get_window_extent(renderer)
        extents = [t.get_window_extent(renderer) for t in panel.texts]
        assert all(box.x0 <= e.x0 and e.x1 <= box.x1 for e in extents)
    # the chapter's own case: the front rises gently, and no label on it may sit on its line
    flat = [dict(model=m, cost=c, acc=a, std=s) for m, c, a, s in
            (("v5", 0.18, 94.10, 0.10), ("r18", 0.7, 94.33, 0.19), ("r34", 1.3, 94.39, 0.08),
             ("dmc", 1.3, 93.97, 0.13), ("gdfr", 2.7, 93.64, 0.22))]
    fig = viz.plot_tradeoff(flat, {"cost": "P"}, lambda key: campaign.pareto(flat, key))
    fig.canvas.draw()
    (ax,) = fig.axes
    (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    ends = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
    along = np.concatenate([np.linspace(p, q, 200) for p, q in zip(ends[:-1], ends[1:])])
    for text in ax.texts:
        assert text.get_window_extent(fig.canvas.get_renderer()).count_contains(along) == 0, text.get_text()
    # a planned network without a finished run: a hollow triangle on the floor at its cost
    planned = rows[:3] + [dict(model="p", macs=15, acc=None, std=None)]
    (ax,) = viz.plot_tradeoff(planned, {"macs": "MACs"}, lambda key: campaign.pareto(planned, key)).axes
    (floor,) = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert list(floor.get_xdata()) == [15] and floor.get_label() == "p (pending)"
    narrow = [dict(model="a", cost=1.0, acc=90.0, std=0.5), dict(model="b", cost=1.6, acc=92.0, std=0.2)]
    (ax,) = viz.plot_tradeoff(narrow, {"cost": "step time"}, lambda key: campaign.pareto(narrow, key)).axes
    labelled = [t for t in ax.get_xticks() if 1.0 <= t <= 1.6]
    assert len(labelled) >= 2  # a cost spanning less than a factor of two still gets ticks to read


def test_earns_its_cost_sets_the_gain_beside_its_cost_ratios(tiny, monkeypatch):
    monkeypatch.setattr(campaign, "MAIN_CLAIMS", campaign.CLAIMS)
    runs = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]})
    for name, history in runs.items():
        history["epochs"] = [{"images_per_sec": 400 if name.startswith("resnet18") else 100}]
    (row,) = campaign.earns_its_cost(runs, step_ratios={"resnet18": 1.0, "drstn_v5": 3.0})
    assert row["verdict"] == "supported" and row["gain (points)"] == pytest.approx(2.03, abs=0.01)
    assert row["time / image ×"] == 3.0  # the controlled step times, not the runs' 4.0
    assert campaign.earns_its_cost(runs)[0]["time / image ×"] is None
    costs = campaign.costs(campaign.PLAN[1])["MMACs"] / campaign.costs(campaign.PLAN[0])["MMACs"]
    assert row["MACs ×"] == round(costs, 2)


def test_verdict_summary_counts_decided_and_waiting_claims(tiny):
    done = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]})
    rows = campaign.comparisons(done)
    assert campaign.verdict_summary(rows) == ("1 of 1 claims have all their seeds (1 supported, 0 contradicted, "
                                              "0 not resolved at this budget)")
    rows.append({"verdict": "pending (runs not finished)"})
    assert campaign.verdict_summary(rows).endswith("; 1 wait for runs still to be trained")


def test_a_claim_in_words_matches_its_table_row_or_says_what_it_waits_for(tiny):
    [claim] = campaign.CLAIMS
    done = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]})
    [row] = campaign.comparisons(done)
    assert campaign.describe_claim(done, claim) == (
        f"{row['difference (points)']:+.2f} points over 3 seeds (95 % interval {row['95 % interval']}): supported")
    waiting = fake_runs({"resnet18": [90.0], "drstn_v5": [92.0, 92.1]})
    assert campaign.comparisons(waiting)[0]["seeds"] == "2 / 1 of 3"
    assert campaign.describe_claim(waiting, claim) == "pending until both sides have all 3 seeds (now 2 and 1)"
    close = fake_runs({"resnet18": [90.0, 91.0, 92.0], "drstn_v5": [90.5, 91.2, 91.9]})
    assert campaign.describe_claim(close, claim) == "pending until both sides have all 5 seeds (now 3 and 3)"


def test_pending_and_decided_claims_share_one_set_of_columns(tiny, monkeypatch):
    monkeypatch.setattr(campaign, "CLAIMS", (Claim("04_drstn", "drstn_v5", "resnet18", "test"),
                                             Claim("04_drstn", "resnet18", "drstn_v5", "reverse")))
    decided = campaign.comparisons(fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3]}))
    pending = campaign.comparisons(fake_runs({"resnet18": [90.0]}))
    assert [list(r) for r in decided] == [list(r) for r in pending] == [list(decided[0])] * 2


def test_a_transfer_run_waits_for_its_source_then_starts_from_its_best_weights(tiny, monkeypatch):
    from dmcbook import transfer
    monkeypatch.setattr(campaign, "PLAN", (
        Spec("to-digits", "drstn_v5", chapters=("04_drstn",), init_from="drstn_v5"),
        Spec("drstn_v5", "drstn_v5", chapters=("04_drstn",))))
    starts, real = [], transfer.init_from_checkpoint
    monkeypatch.setattr(transfer, "init_from_checkpoint", lambda net, source: starts.append(source) or real(net, source))
    said = []
    trained = campaign.run("04_drstn", seeds=(1,), root=tiny, say=said.append)
    # the transfer comes first in the plan, but waits; the next call finds its source finished
    assert trained == ["drstn_v5-seed1"] and any("to-digits-seed1: waits for drstn_v5-seed1" in s for s in said)
    assert campaign.run("04_drstn", seeds=(1,), root=tiny, say=said.append) == ["to-digits-seed1"]
    assert starts == [tiny / "campaign" / "converge" / "drstn_v5-seed1" / "best.pt"]


def test_a_first_epoch_claim_compares_the_first_epoch(tiny, monkeypatch):
    monkeypatch.setattr(campaign, "CLAIMS", (Claim("04_drstn", "drstn_v5", "resnet18", "t", measure="first"),))
    runs = fake_runs({"resnet18": [95.0, 95.0, 95.0], "drstn_v5": [90.0, 90.0, 90.0]})
    for name, history in runs.items():  # V5 ahead after one epoch, behind at the end
        history["epochs"] = [{"test_acc": (0.6 if name.startswith("drstn") else 0.3) + 0.01 * int(name[-1])}]
    (row,) = campaign.comparisons(runs)
    assert row["claim"].endswith("(first epoch)") and row["verdict"] == "supported"
    assert row["difference (points)"] == pytest.approx(30.0)


def test_the_cli_runs_the_plan_and_reports_its_status(tiny, monkeypatch, capsys):
    from dmcbook.cli import main
    monkeypatch.setattr(campaign, "find_project_root", lambda: tiny)
    main(["campaign", "status", "--chapter", "05_head_to_head", "--seeds", "0"])
    assert capsys.readouterr().out.splitlines() == ["0 runs finished (0 CPU-minutes of training), 1 pending",
                                                    "  pending drstn_v5-seed0",
                                                    f"this machine trains in {campaign.PRECISION}: "
                                                    "campaign run can train here"]
    main(["campaign", "run", "--chapter", "05_head_to_head", "--seeds", "0"])
    assert "drstn_v5-seed0: finished" in capsys.readouterr().out
    assert (tiny / "results" / "campaign" / "converge" / "drstn_v5-seed0" / "history.json").exists()
    main(["campaign", "status", "--seeds", "0"])
    assert capsys.readouterr().out.startswith("1 run finished")
    assert main(["campaign", "ship", "drstn_v5-seed0"]) == 0
    assert "drstn_v5-seed0: best weights (epoch 1) shipped" in capsys.readouterr().out
    assert (tiny / "results" / "campaign" / "converge" / "drstn_v5-seed0" / "weights.safetensors").exists()
    assert main(["campaign", "ship", "resnet18-seed0"]) == 2  # not trained: one line, no traceback
    assert "has not finished" in capsys.readouterr().err
    assert main(["campaign", "status", "drstn_v5-seed0"]) == 2
    assert "takes no run names" in capsys.readouterr().err


def test_results_rows_state_seeds_cost_precision_and_the_papers_number(tiny):
    runs = fake_runs({"drstn_v5": [90.0, 92.0]})
    for history in runs.values():
        history.update(config={"dataset": "digits", "parameters": 181_000}, best_test_acc=0.95, train_time=120.0,
                       engine={"precision": "bf16-autocast"})
    (row,) = campaign.results_table(runs, "04_drstn")
    assert row["final acc % (converge)"] == "91.00 ± 1.41" and row["seeds"] == 2 and row["CPU-min / run"] == 2.0
    assert row["paper %"].startswith("92.29 (CIFAR-10)") and row["precision"] == "bf16-autocast"


def test_a_configuration_two_chapters_share_shows_each_papers_own_number():
    runs = fake_runs({"resnet34": [94.0]})
    for history in runs.values():
        history.update(config={"dataset": "fashion-mnist", "parameters": 1_330_000}, best_test_acc=0.94,
                       train_time=60.0, engine={"precision": "bf16-autocast"})
    paper = {chapter: next(row["paper %"] for row in campaign.results_table(runs, chapter)
                           if row["configuration"] == "resnet34") for chapter in ("01_dmcnet", "02_gdfrnet")}
    assert paper == {"01_dmcnet": "95.65 (CIFAR-10, Net3 of Table 7)",
                     "02_gdfrnet": "96.46 (CIFAR-10, net2 of Table 9)"}


def test_final_accuracies_list_each_seed_per_configuration_in_plan_order_on_one_data_set():
    runs = fake_runs({"drstn_v5": [90.0, 92.0], "resnet18": [93.0], "digits-scratch": [99.0]})
    for name, history in runs.items():
        history["config"] = {"dataset": "digits" if name.startswith("digits") else "fashion-mnist"}
    finals = campaign.final_accuracies(runs, "04_drstn")
    assert list(finals.items()) == [("resnet18", [93.0]), ("drstn_v5", [90.0, 92.0])]
    assert campaign.final_accuracies(runs, "04_drstn", dataset="digits") == {"digits-scratch": [99.0]}
    # planned: every configuration of the data set keeps its slot, those without runs empty
    planned = campaign.final_accuracies(runs, "04_drstn", planned=True)
    assert planned["drstn_v1"] == [] and planned["drstn_v5"] == [90.0, 92.0] and "digits-scratch" not in planned
    assert campaign.final_accuracies(runs, "04_drstn", dataset="digits", planned=True)["digits-transfer"] == []
    calibration = fake_runs({"resnet18-10ep": [93.0], "resnet18": [94.0]})
    for history in calibration.values():
        history["config"] = {"dataset": "fashion-mnist"}
    assert campaign.final_accuracies(calibration, "05_head_to_head") == {"resnet18": [94.0]}  # not its 10 epochs


def test_gpu_minutes_are_kept_apart_from_cpu_minutes(tiny):
    runs = fake_runs({"drstn_v5": [90.0, 92.0, 91.0], "resnet18": [93.0]})
    for (name, history), (device, minutes) in zip(runs.items(), [("cpu", 30), ("cpu", 34), ("cuda:0", 2),
                                                                  ("cuda", 1)]):
        history.update(environment={"device": device}, train_time=60 * minutes, best_test_acc=0.95,
                       config={"dataset": "fashion-mnist", "parameters": 1000},
                       engine={"precision": "bf16-autocast"}, epochs=[{"images_per_sec": 10 * minutes}])
    v5, r18 = campaign.results_table(runs, "04_drstn")[::-1]
    assert (v5["CPU-min / run"], v5["GPU-min / run"]) == (32.0, 2.0)
    assert r18["CPU-min / run"] is None and r18["GPU-min / run"] == 1.0
    assert campaign.training_minutes(runs.values()) == {"cpu": 64.0, "cuda": 3.0}
    # a run that recorded each epoch's device (resumed on a CPU after a GPU) splits its minutes
    moved = {"environment": {"device": "cpu"}, "train_time": 660.0,
             "epochs": [{"device": "cuda:0", "train_time": 60.0}, {"device": "cpu", "train_time": 600.0}]}
    assert campaign.training_minutes([moved]) == {"cuda": 1.0, "cpu": 10.0}
    speeds = {r["model"]: r["train img/s"] for r in campaign.head_to_head(runs, "04_drstn")}
    assert speeds == {"resnet18": None, "drstn_v5": 340}  # the CPU's epochs only


def test_a_calibration_spec_keeps_its_own_recipe_and_seeds_and_stays_out_of_the_comparison(tiny, monkeypatch):
    longer = Spec("drstn_v5-2ep", "drstn_v5", chapters=("05_head_to_head",), recipe={"epochs": 2}, seeds=(0,))
    monkeypatch.setattr(campaign, "PLAN", (*campaign.PLAN, longer))
    assert campaign.run("05_head_to_head", root=tiny, say=lambda *_: None, limit=1) == ["drstn_v5-seed0"]
    assert campaign.run("05_head_to_head", seeds=(0,), root=tiny, say=lambda *_: None) == ["drstn_v5-2ep-seed0"]
    done, pending = campaign.collect("05_head_to_head", seeds=(0,), root=tiny)
    assert len(done["drstn_v5-2ep-seed0"]["epochs"]) == 2 and len(done["drstn_v5-seed0"]["epochs"]) == 1
    assert pending == [] and [s.variant for s in campaign.compared("05_head_to_head")] == ["drstn_v5"]
    assert [r["model"] for r in campaign.head_to_head(done)] == ["drstn_v5"]


def test_only_the_calibration_runs_stay_out_of_the_side_by_side_comparisons():
    chapter04 = [spec.variant for spec in campaign.compared("04_drstn")]
    assert "drstn_v4-no-gate-decay" in chapter04 and "drstn_v4" in chapter04
    head_to_head = [spec.variant for spec in campaign.compared("05_head_to_head")]
    assert "resnet18" in head_to_head and not any(v.endswith("-10ep") for v in head_to_head)


def test_convergence_rows_give_the_worst_seed_of_each_measure():
    def run(*accs):
        return {"final_test_acc": accs[-1], "epochs": [{"test_acc": a} for a in accs]}
    done = {"r18-seed0": run(0.90, 0.92, 0.93), "r18-seed1": run(0.91, 0.915, 0.925), "x-seed0": run(0.5, 0.6)}
    (row,) = campaign.convergence(done, ["r18", "missing"])
    assert row["seeds"] == 2 and row["epochs"] == 3 and row["lowest %"] == pytest.approx(92.5)
    assert row["final %"] == pytest.approx(92.75) and row["last-epoch gain"] == pytest.approx(1.0)
    assert row["last-2 gain"] == pytest.approx(3.0)


def test_a_close_call_gets_its_verdict_only_with_its_two_extra_seeds(tiny):
    three = fake_runs({"resnet18": [90.0, 91.0, 92.0], "drstn_v5": [90.5, 91.2, 91.9]})
    (row,) = campaign.comparisons(three)
    assert row["verdict"].startswith("pending") and row["seeds"] == "3 / 3 of 5"
    five = fake_runs({"resnet18": [90.0, 91.0, 92.0, 91.0, 90.5], "drstn_v5": [90.5, 91.2, 91.9, 91.3, 90.6]})
    (row,) = campaign.comparisons(five)
    assert row["seeds"] == 5 and row["verdict"] in ("supported", "not resolved at this budget")


def test_a_run_the_deadline_stopped_resumes_from_its_checkpoint_and_a_fresh_clone_restarts_it(
        tiny, monkeypatch, tmp_path_factory):
    import dataclasses
    import shutil
    monkeypatch.setitem(RECIPES, "converge", dataclasses.replace(RECIPES["converge"], epochs=2))
    train_epoch = Trainer._train_epoch
    trained_epochs = []

    def slow_epoch(self, epoch):  # four seconds an epoch: the deadline leaves room for one, not two
        time.sleep(4)
        return train_epoch(self, epoch)

    def counted_epoch(self, epoch):
        trained_epochs.append(epoch)
        return train_epoch(self, epoch)
    monkeypatch.setattr(Trainer, "_train_epoch", slow_epoch)
    # the first epoch starts if loading the data took under 8 s, even on a busy machine
    campaign.run("04_drstn", seeds=(0,), root=tiny, limit=1, deadline=time.time() + 8, say=lambda *_: None)
    monkeypatch.setattr(Trainer, "_train_epoch", counted_epoch)
    stopped = tiny / "campaign" / "converge" / "resnet18-seed0"
    assert campaign.progress(["resnet18-seed0", "drstn_v5-seed0"], root=tiny) == {"resnet18-seed0": (1, 2)}
    clone = tmp_path_factory.mktemp("fresh_clone")  # holds only what git carries: the history
    carried = clone / "campaign" / "converge" / "resnet18-seed0"
    carried.mkdir(parents=True)
    shutil.copy(stopped / "history.json", carried / "history.json")

    campaign.run("04_drstn", seeds=(0,), root=tiny, limit=1, say=lambda *_: None)
    assert len(trained_epochs) == 1  # resumed here from its checkpoint: only the second epoch trains
    said = []
    campaign.run("04_drstn", seeds=(0,), root=clone, limit=1, say=said.append)
    assert len(trained_epochs) == 3 and "starts again from the first epoch" in said[0]
    for folder in (stopped, carried):
        history = json.loads((folder / "history.json").read_text())
        assert history["status"] == "finished" and [e["epoch"] for e in history["epochs"]] == [1, 2]


@pytest.mark.parametrize("history", [{"status": "running", "epochs": [{}], "final_test_acc": 0.5},
                                     {"status": "running", "epochs": []}],  # stopped while the data loaded
                         ids=["after-an-epoch", "before-any-epoch"])
def test_once_the_deadline_stops_a_run_no_other_run_starts(tiny, monkeypatch, history):
    import types
    from dmcbook import experiments
    started, said = [], []

    def stopped_by_the_deadline(session, name, *args, **kwargs):
        started.append(name)
        return types.SimpleNamespace(history=history)
    monkeypatch.setattr(experiments, "run_experiment", stopped_by_the_deadline)
    assert campaign.run("04_drstn", seeds=(0, 1), root=tiny, deadline=time.time() + 3600,
                        say=said.append) == ["resnet18-seed0"]
    assert started == ["resnet18-seed0"]
    assert said[-1].startswith(f"[campaign] resnet18-seed0: running after {len(history['epochs'])} epochs")


def test_no_run_starts_whose_first_epoch_would_end_after_the_deadline(tiny, monkeypatch):
    monkeypatch.setattr(campaign, "_estimates", lambda root=None: {"resnet18": (200.0, "its finished runs")})
    said = []
    # resnet18's epochs take 10 minutes by that estimate; drstn_v5 has none, so it may start
    trained = campaign.run("04_drstn", seeds=(0,), root=tiny, limit=1, deadline=time.time() + 60, say=said.append)
    assert trained == ["drstn_v5-seed0"] and "would end after the deadline" in said[0]
    assert not (tiny / "campaign" / "converge" / "resnet18-seed0").exists()


def test_whole_runs_start_only_the_runs_that_finish_before_the_deadline(tiny, monkeypatch):
    import types
    from dmcbook import experiments
    monkeypatch.setitem(RECIPES, "converge", Recipe("converge", epochs=4, batch_size=32, width=4,
                                                    train_subset=64, test_subset=64, augment="none"))
    # resnet18: 10 minutes an epoch, 40 a run; drstn_v5 has no estimate, so it may always start
    monkeypatch.setattr(campaign, "_estimates", lambda root=None: {"resnet18": (40.0, "its finished runs")})
    started = []

    def finished(session, name, *args, **kwargs):
        started.append(name)
        return types.SimpleNamespace(history={"status": "finished", "epochs": [{}] * 4, "final_test_acc": 0.5})
    monkeypatch.setattr(experiments, "run_experiment", finished)

    def trained(whole_runs):
        started.clear()
        said = []
        campaign.run("04_drstn", seeds=(0,), root=tiny, deadline=time.time() + 30 * 60, whole_runs=whole_runs,
                     say=said.append)
        return started[:], said
    assert trained(whole_runs=False)[0] == ["resnet18-seed0", "drstn_v5-seed0"]  # its first epoch fits
    names, said = trained(whole_runs=True)  # 44 minutes with the margin: passed over
    assert names == ["drstn_v5-seed0"] and "its 4 remaining epochs (about 44 min)" in said[0]
    # begun in this checkout, 2 of 4 epochs done: the 22 minutes left fit
    folder = tiny / "campaign" / "converge" / "resnet18-seed0"
    folder.mkdir(parents=True)
    history = {"config": {"recipe": {"epochs": 4}}, "epochs": [{}, {}], "status": "running"}
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "checkpoint.pt").write_bytes(b"")
    assert trained(whole_runs=True)[0] == ["resnet18-seed0", "drstn_v5-seed0"]
    # carried by git without its checkpoint, it starts again from its first epoch: no longer fits
    (folder / "checkpoint.pt").unlink()
    assert trained(whole_runs=True)[0] == ["drstn_v5-seed0"]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_a_machine_that_would_train_in_another_precision_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                                     native_bf16):
    from dmcbook import train
    monkeypatch.setattr(train, "cpu_supports_bf16", lambda: native_bf16)
    monkeypatch.setattr(campaign, "collect", lambda *a, **k: ({}, []))  # nothing pending: no run starts
    if native_bf16:
        assert campaign.run(root=tmp_path, device="cpu", say=lambda *_: None) == []
    else:
        with pytest.raises(ValueError, match="train in bf16-autocast, and this CPU would train them in fp32"):
            campaign.run(root=tmp_path, device="cpu", say=lambda *_: None)


def test_a_gpu_without_bf16_is_refused_by_name_and_the_cli_says_why(tmp_path, monkeypatch, capsys):
    import torch
    from dmcbook import cli, train
    monkeypatch.setattr(train, "select_precision", lambda device, wanted: torch.float16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(cli, "pick_device", lambda device=None: torch.device("cuda"))
    refusal = campaign.precision_refusal("cuda")
    assert refusal.startswith("the campaign's runs train in bf16-autocast, and this Tesla T4 would train "
                              "them in fp16-autocast") and "GPU with bf16" in refusal
    with pytest.raises(ValueError, match="this Tesla T4 would train them in fp16"):
        campaign.run(root=tmp_path, device="cuda", say=lambda *_: None)
    monkeypatch.setattr(campaign, "find_project_root", lambda: tmp_path)
    monkeypatch.setattr(campaign, "collect", lambda *a, **k: ({}, []))
    cli.main(["campaign", "status"])
    assert capsys.readouterr().out.splitlines()[-1] == f"campaign run would refuse this machine: {refusal}"


def test_git_ignores_every_checkpoint_and_tracks_none():
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=root).returncode == 0
    for run in ("results/campaign/converge/resnet18-seed0/", "results/04_drstn/budget/resnet18/"):
        assert all(ignored(run + name) for name in ("checkpoint.pt", "checkpoint.pt.sha256", "best.pt"))
        assert not ignored(run + "history.json") and not ignored(run + "weights.safetensors")
    tracked = subprocess.run(["git", "ls-files", "*.pt", "*.pt.sha256"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked == [], f"checkpoints committed: {tracked}"


def test_a_configuration_is_costed_by_its_finished_runs_else_by_its_step_time_ratio():
    cpu = {"device": "cpu"}
    done = {"resnet18-seed0": {"train_time": 40 * 60, "environment": cpu},
            "resnet18-seed1": {"train_time": 44 * 60, "environment": cpu},
            "drstn_v5-seed0": {"train_time": 30 * 60, "environment": cpu},
            "drstn_v5-seed1": {"train_time": 3 * 60, "environment": {"device": "cuda:0"}}}  # not CPU time
    estimates = campaign.estimate_minutes(done, {"resnet18": 1.0, "drstn_v5": 0.5, "dmcnet34": 4.0})
    assert estimates["resnet18"] == (42.0, "its finished runs") and estimates["drstn_v5"][0] == 30.0
    # minutes per unit of ratio: 42 from ResNet-18, 60 from V5; their mean, 51, times 4
    assert estimates["dmcnet34"][0] == pytest.approx(204.0) and "4.00" in estimates["dmcnet34"][1]
    assert "gdfrnet" not in estimates and campaign.estimate_minutes(done, {}).keys() == {"resnet18", "drstn_v5"}
    # A recipe change alone keeps its network's step; the 10-epoch calibration costs half.
    estimates = campaign.estimate_minutes(done, {"resnet18": 1.0, "drstn_v5": 0.5, "drstn_v4": 2.0})
    assert estimates["drstn_v5-10ep"][0] == pytest.approx(0.5 * 0.5 * 51)
    assert estimates["drstn_v4-no-gate-decay"] == (pytest.approx(2.0 * 51), "drstn_v4's step: 2.00 x ResNet-18's")


def test_pending_costs_count_what_a_started_run_has_left(tiny):
    assert campaign.step_time_ratios(root=tiny) == {} and campaign.step_costs(root=tiny) == {}  # not measured yet
    (tiny / "performance").mkdir()
    (tiny / "performance" / "campaign_costs.json").write_text(json.dumps(
        {"reference": "resnet18", "configurations": [{"configuration": "drstn_v5", "step time ratio": 2.0}]}))
    assert campaign.step_time_ratios(root=tiny) == {"resnet18": 1.0, "drstn_v5": 2.0}
    assert campaign.pending_costs(["resnet18-seed0"], root=tiny) == [
        {"configuration": "resnet18", "runs": 1, "CPU-hours": None, "estimated from": "not measured"}]
    runs = tiny / "campaign" / "converge"
    for name, history in {"resnet18-seed0": {"status": "finished", "train_time": 600 * 60, "final_test_acc": 0.9,
                                             "environment": {"device": "cpu"}},
                          "drstn_v5-seed1": {"status": "running", "epochs": [{}],  # ten hours; a quarter done
                                             "config": {"recipe": {"epochs": 4}}}}.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "history.json").write_text(json.dumps(history))
    [row] = campaign.pending_costs(["drstn_v5-seed0", "drstn_v5-seed1"], root=tiny)
    assert row == {"configuration": "drstn_v5", "runs": 2, "CPU-hours": 2 * 10 * 1.75,
                   "estimated from": "its step: 2.00 x ResNet-18's"}


def test_intervals_give_decided_claims_as_numbers_and_the_plot_draws_one_line_each(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    from dmcbook import viz
    monkeypatch.setattr(campaign, "CLAIMS", (Claim("04_drstn", "drstn_v5", "resnet18", "t"),
                                             Claim("04_drstn", "drstn_v1", "resnet18", "t"),
                                             Claim("04_drstn", "drstn_v2", "resnet18", "t")))
    done = fake_runs({"resnet18": [90.0, 90.2, 90.1], "drstn_v5": [92.0, 92.1, 92.3],
                      "drstn_v1": [91.5, 90.0, 92.0]})  # V2 has no runs: pending, so not drawn
    rows = campaign.intervals(done, "04_drstn")
    assert [r["claim"] for r in rows] == ["drstn_v5 > resnet18", "drstn_v1 > resnet18"]
    v5, v1 = rows
    assert v5["difference"] == pytest.approx(2.033, abs=1e-3) and v5["low"] > 0 and v5["verdict"] == "supported"
    assert v1["low"] < 0 < v1["high"] and v1["verdict"] == "not resolved at this budget"
    table = {r["claim"]: r for r in campaign.comparisons(done, "04_drstn")}
    assert table["drstn_v5 > resnet18"]["95 % interval"] == f"[{v5['low']:.2f}, {v5['high']:.2f}]"
    fig = viz.plot_intervals(rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["drstn_v1 > resnet18", "drstn_v5 > resnet18"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["not resolved at this budget", "supported"]
    assert viz.fits_page(fig)
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # off the intervals
    with pytest.raises(ValueError, match="at least one claim"):
        viz.plot_intervals([])
    assert campaign.intervals(done, "04_drstn", measure="first") == []


def test_a_re_measurement_of_one_configuration_keeps_the_other_rows(tmp_path):
    import importlib.util
    from pathlib import Path
    script = Path(__file__).parents[1] / "results" / "performance" / "campaign_costs.py"
    module_spec = importlib.util.spec_from_file_location("campaign_costs", script)
    costs = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(costs)
    known = ["a", "b", "c"]
    with pytest.raises(SystemExit, match="unknown configuration.*d; expected some of: a, b, c"):
        costs.chosen(["a", "d"], known)
    assert costs.chosen([], known) == set(known)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"machine": {"date": "old"}, "augmentation": {"ratio": 0.02}, "configurations": [
        {"configuration": n, "step time ratio": r} for n, r in (("a", 1.0), ("b", 6.8), ("c", 2.0))]}))
    fresh = {"machine": {"date": "new"}, "configurations": [{"configuration": "b", "step time ratio": 6.1}]}
    kept = costs.keep_others(path, fresh, {"b"}, known)
    assert kept["machine"]["date"] == "old" and kept["augmentation"]["ratio"] == 0.02
    assert [(r["configuration"], r["step time ratio"], r.get("measured")) for r in kept["configurations"]] == [
        ("a", 1.0, None), ("b", 6.1, "new"), ("c", 2.0, None)]
    assert costs.keep_others(path, fresh, set(known), known) is fresh  # a full measurement replaces all


def test_the_status_line_counts_runs_in_words():
    assert campaign.status_line({"a-seed0": {}}, []) == "1 run finished, none pending"
    line = campaign.status_line({}, ["a-seed0", "a-seed1"])
    assert line.startswith("0 runs finished, 2 pending; what the pending ones still need")


def test_the_curves_are_described_by_their_last_gain_and_the_spread_at_both_ends(tiny):
    def run(*accs):
        return {"final_test_acc": accs[-1], "epochs": [{"test_acc": a} for a in accs],
                "config": {"dataset": "digits"}}
    assert campaign.describe_curves({}, "04_drstn") == "no run has finished yet"
    done = {"resnet18-seed0": run(0.80, 0.90, 0.92, 0.93), "resnet18-seed1": run(0.82, 0.91, 0.93, 0.931),
            "drstn_v5-seed0": run(0.70, 0.85, 0.90, 0.905)}
    alone = campaign.describe_curves({n: h for n, h in done.items() if n.startswith("resnet18")}, "04_drstn")
    assert alone == "over their last two epochs the curves gain at most 3.00 points of test accuracy " \
                    "(resnet18's steepest seed)"
    text = campaign.describe_curves(done, "04_drstn")
    # V5's last two epochs gain 5.5 points; after epoch 1 the means are 81 and 70, at the end 93.05 and 90.5
    assert text.startswith("over their last two epochs the curves gain at most 5.50 points")
    assert "lie 11.00 points apart (resnet18 ahead, drstn_v5 behind) after the first epoch" in text
    assert text.endswith("2.55 points apart (resnet18 ahead, drstn_v5 behind) after the last")
    assert campaign.describe_curves(done, "04_drstn", dataset="fashion-mnist") == "no run has finished yet"
    flat = {"resnet18-seed0": run(0.80, 0.99, 0.99, 0.985)}
    assert campaign.describe_curves(flat, "04_drstn").startswith(
        "no curve's test accuracy rises over its last two epochs (the most: -0.50 points)")


def test_a_chapter_s_status_names_the_command_that_trains_what_is_pending(tiny, capsys, monkeypatch):
    monkeypatch.setattr(campaign, "find_project_root", lambda: tiny)  # no run finished there
    done, pending = campaign.show_status("04_drstn")
    printed = capsys.readouterr().out
    assert not done and len(pending) == 6 and "6 pending" in printed
    command = next(line for line in printed.splitlines() if line.startswith("to train them:"))
    from dmcbook.cli import build_parser
    argv = command.split("python -m dmcbook ", 1)[1].split(" (")[0].split()
    assert build_parser().parse_args(argv).chapter == "04_drstn"
