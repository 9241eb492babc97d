"""DistributedDataParallel under the engine: two gloo processes on the CPU train exactly what one
process trains with the same global batch, resume exactly, write once, and the CLI runs under torchrun."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dmcbook.data import get_data
from dmcbook.train import Trainer, get_recipe, load_checkpoint

RECIPE = dict(epochs=2, batch_size=32, lr=0.05, width=None, train_subset=128, test_subset=64)


def tiny_net():
    """No batch norm: its per-process statistics are the one thing DDP does not share."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _data(on_device):
    return get_data("digits", batch_size=32, augment="none", train_subset=128, test_subset=64,
                    on_device=on_device, num_workers=None if on_device else 0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir, on_device):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        recipe = get_recipe("smoke", **RECIPE)
        data = _data(on_device)
        # fp32: bf16 would round the two processes' half batches otherwise than one whole batch
        engine = dict(out_dir=out_dir, device="cpu", progress=False, precision="fp32")
        Trainer(tiny_net(), data, recipe, **engine).fit(stop_after=1)
        Trainer(tiny_net(), data, recipe, resume=True, **engine).fit()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("on_device", [True, False])
def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(tmp_path, on_device):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), on_device), nprocs=2, join=True)
    single = tiny_net()
    straight = Trainer(single, _data(on_device), get_recipe("smoke", **RECIPE), device="cpu", progress=False,
                       precision="fp32").fit()
    ddp = json.loads((tmp_path / "history.json").read_text())  # written by rank 0 alone
    assert ddp["status"] == "finished" and ddp["engine"]["processes"] == 2
    for a, b in zip(ddp["epochs"], straight["epochs"]):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    trained = tiny_net()
    state = load_checkpoint(tmp_path / "checkpoint.pt", trained)["model"]
    assert not any(key.startswith("module.") for key in state)
    for name, value in single.state_dict().items():
        assert torch.allclose(trained.state_dict()[name], value, atol=1e-5), name


def test_torchrun_trains_one_model_that_eval_loads(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(_free_port()), "-m", "dmcbook", "train", "--dataset", "digits", "--preset", "smoke",
               "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("final test accuracy") == 1 and "2 processes" in result.stdout
    evaluated = subprocess.run([sys.executable, "-m", "dmcbook", "eval", str(out / "checkpoint.pt"), "--device", "cpu"],
                               capture_output=True, text=True, env=env, timeout=300)
    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout, evaluated.stderr[-2000:]
