import pytest
import torch
from torch import nn

import dmcbook
from dmcbook.profile import benchmark, count_flops, count_params


def test_flops_of_a_convolution_match_the_formula():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    counted = count_flops(conv, (3, 10, 12))
    macs = 8 * 3 * 3 * 3 * 10 * 12
    assert counted == {"macs": macs, "flops": 2 * macs}


def test_resnet34_costs_match_the_papers_thop_counts():
    # DMCNet Table 7: ResNet-34 (Net4) 3.68 G at 224x224; GDFRNet Table 8: 1.16 G at 32x32 (cifar stem).
    at224 = count_flops(dmcbook.create_model("resnet34", 10, 3, "imagenet"), (3, 224, 224))["macs"] / 1e9
    at32 = count_flops(dmcbook.create_model("resnet34", 10, 3, "cifar"), (3, 32, 32))["macs"] / 1e9
    assert abs(at224 - 3.6) < 0.1 and abs(at32 - 1.16) < 0.02


def test_count_params():
    assert count_params(nn.Linear(3, 2)) == 8


def test_benchmark_reports_ratios_to_the_baseline():
    rows = benchmark(["resnet18"], baseline="resnet34", input_size=(1, 16, 16), batch_size=2, steps=1,
                     rounds=1, width=4)
    assert [r["model"] for r in rows] == ["resnet34", "resnet18"]
    assert rows[0]["train time ratio"] == 1.0 and rows[0]["MACs ratio"] == 1.0
    assert rows[1]["MACs ratio"] < 1.0
    assert rows[0]["round spread"] == 0.0  # one round: nothing to spread



def test_the_round_spread_is_each_network_s_fastest_round_over_its_slowest(monkeypatch):
    from dmcbook import profile
    speeds = iter([100.0, 80.0, 50.0, 40.0])  # training rounds: resnet34, resnet18, resnet34, resnet18
    monkeypatch.setattr(profile, "_bare_images_per_second",
                        lambda model, x, y, train, steps, dtype: next(speeds) if train else 1.0)
    monkeypatch.setattr(profile, "_engine_images_per_second", lambda *args: 1.0)
    import dmcbook.train
    monkeypatch.setattr(dmcbook.train, "select_precision", lambda device, precision: None)  # fp32 only
    rows = benchmark(["resnet18"], baseline="resnet34", input_size=(1, 16, 16), batch_size=2, steps=1,
                     rounds=2, width=4)
    assert [r["round spread"] for r in rows] == [1.0, 1.0]  # 100 over 50, 80 over 40
    assert rows[1]["train time ratio"] == pytest.approx(100 / 80, abs=1e-3)  # the best rounds


def test_the_machine_line_says_whether_the_cpu_trains_in_bf16():
    from dmcbook.profile import machine_line
    info = {"cpu": "AMD EPYC", "cores": 2, "torch_threads": 2, "native_bf16": False, "load_average_1_5_15": [1.5]}
    assert machine_line(info) == ("measured on AMD EPYC, 2 cores (no native bf16, so fp32 only), 2 torch threads, "
                                  "load average 1.5")
    assert "(native bf16)" in machine_line(info | {"native_bf16": True})
    assert machine_line(info | {"gpu": "NVIDIA H100"}).startswith("measured on NVIDIA H100 (GPU), 2 torch threads")
    assert ", 1 torch thread, " in machine_line(info | {"torch_threads": 1})
    recorded = info | {"load_average_1_5_15": [1.63, 4.54, 6.28], "date": "2026-11-24 13:09 UTC"}
    assert machine_line(recorded).endswith("load average 1.63, 4.54, 6.28 (1, 5, 15 min), 2026-11-24 13:09 UTC")


def test_timing_noise_is_the_largest_gap_between_one_network_s_two_timings():
    from dmcbook.profile import timing_noise
    rows = [{"engine / bare": 0.95}, {"engine / bare": 1.08}, {"engine / bare": 0.99}]
    assert timing_noise(rows) == pytest.approx(0.08)
    # rounds that differ more than the two loops do: the load changed while the network was timed
    assert timing_noise(rows + [{"engine / bare": 1.0, "round spread": 0.31}]) == pytest.approx(0.31)


def test_a_time_ratio_beyond_the_macs_ratio_counts_only_outside_the_timing_noise():
    from dmcbook.profile import time_beyond_macs
    rows = [{"model": "base", "engine / bare": 0.95, "train time ratio": 1.0, "MACs ratio": 1.0},
            {"model": "close", "engine / bare": 0.97, "train time ratio": 0.96, "MACs ratio": 1.0},
            {"model": "dear", "engine / bare": 1.02, "train time ratio": 1.40, "MACs ratio": 0.93}]
    assert time_beyond_macs(rows, "close") == (
        "close's time ratio lies 0.04 below its MACs ratio, inside the 0.05 by which one network's two "
        "timings differ here, so this benchmark does not resolve a cost beyond its MACs")
    assert time_beyond_macs(rows, "dear").endswith("lies 0.47 above its MACs ratio, outside the 0.05 by which "
                                                   "one network's two timings differ here: it costs more time "
                                                   "than its MACs say")
    with pytest.raises(ValueError, match="'other' is not in the benchmark"):
        time_beyond_macs(rows, "other")


def test_a_costs_row_gives_the_difference_from_the_paper_from_unrounded_counts():
    from dmcbook.profile import cost_row, percent_off
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(1, 3, 8, 8))
    params = sum(p.numel() for p in net.parameters()) / 1e6  # 0.003 834 M
    row = cost_row("net", net, (3, 8, 8), paper_params_m=0.0038)
    assert row["params (M)"] == 0.0 and row["Δ params %"] == pytest.approx(100 * (params / 0.0038 - 1), abs=0.005)
    assert percent_off(20.801395, 20.59) == 1.03 and str(percent_off(1.0, 1.00001)) == "0.0"  # no "-0.0"
