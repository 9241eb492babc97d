"""The engine's choices: precision, channels-last, threads, progress styles, what the history records."""
import pytest
import torch
from torch import nn

import dmcbook
from dmcbook import train as engine
from dmcbook.data import get_data
from dmcbook.train import Trainer, evaluation_dtype, get_recipe, select_precision

RECIPE = dict(epochs=1, batch_size=64, lr=0.05, width=8, train_subset=256, test_subset=128)


@pytest.fixture(scope="module")
def digits():
    return get_data("digits", batch_size=64, augment="none", train_subset=256, test_subset=128)


def small_model():
    torch.manual_seed(0)
    return dmcbook.create_model("resnet18", 10, 1, "cifar", width=8)


@pytest.mark.parametrize("flags, expected", [("fpu sse avx512f avx512_bf16", torch.bfloat16),
                                             ("fpu amx_tile amx_bf16", torch.bfloat16),
                                             ("fpu sse avx2 avx512f", None)])
def test_auto_precision_on_the_cpu_follows_native_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(engine, "_cpuinfo", lambda: {"flags": flags})
    assert select_precision(torch.device("cpu"), "auto") is expected
    assert select_precision(torch.device("cpu"), "fp32") is None
    assert select_precision(torch.device("cpu"), "bf16") is torch.bfloat16


def test_bad_precisions_are_refused_in_one_line():
    with pytest.raises(ValueError, match="precision"):
        select_precision(torch.device("cpu"), "fp8")
    with pytest.raises(ValueError, match="fp16 autocast is for GPUs"):
        select_precision(torch.device("cpu"), "fp16")


def test_the_history_records_the_engine(digits, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    history = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False, precision="bf16").fit()
    assert history["engine"]["precision"] == "bf16-autocast" and history["engine"]["channels_last"] is True
    assert history["engine"]["threads"] == torch.get_num_threads() == len(__import__("os").sched_getaffinity(0))
    assert history["engine"]["data_on_device"] is True and history["engine"]["processes"] == 1
    assert history["environment"]["cpu_threads"] == history["engine"]["threads"]
    assert history["epochs"][0]["device"] == "cpu" and history["epochs"][0]["epoch_time"] > 0
    fp32 = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False, precision="fp32",
                   channels_last=False).fit()
    assert fp32["engine"]["precision"] == "fp32" and fp32["engine"]["channels_last"] is False
    # the same model, the same data: bf16 autocast lands near fp32 after one epoch
    assert abs(history["epochs"][0]["train_loss"] - fp32["epochs"][0]["train_loss"]) < 0.1


def test_a_training_step_never_waits_for_the_device(digits, monkeypatch):
    # On a GPU every .item() or `if tensor` blocks until the queued kernels have run; the epoch's
    # sums are read once, at its end (.tolist()), which neither counts.
    trainer = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False)
    reads = []
    item, boolean = torch.Tensor.item, torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or item(self))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: reads.append("bool") or boolean(self))
    trainer._train_epoch(0)
    assert trainer.steps_per_epoch == 4 and reads == []


def test_the_training_loss_and_accuracy_are_the_image_weighted_means_of_the_steps(digits):
    trainer = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False)
    steps, criterion = [], trainer.criterion

    def recorded(logits, y):
        loss = criterion(logits, y)
        steps.append((loss.item(), len(y), (logits.argmax(1) == y).sum().item()))
        return loss
    trainer.criterion = recorded
    epoch = trainer.fit()["epochs"][0]
    loss_sum = 0.0
    for loss, n, _ in steps:  # in step order, as float64: the engine's sum exactly
        loss_sum += loss * n
    seen = sum(n for _, n, _ in steps)
    assert epoch["train_loss"] == loss_sum / seen and epoch["train_acc"] == sum(c for *_, c in steps) / seen


def test_the_test_pass_runs_in_the_training_precision_on_a_gpu_and_in_fp32_on_a_cpu(digits, monkeypatch):
    gpu = torch.device("cuda", 0)
    assert evaluation_dtype(gpu, None) is None  # an fp32 run is scored in fp32, not in fp16
    assert evaluation_dtype(gpu, torch.float16) is torch.float16
    assert evaluation_dtype(gpu, torch.bfloat16) is torch.bfloat16
    assert evaluation_dtype(torch.device("cpu"), torch.bfloat16) is None  # as every CPU run was scored
    asked, predict = [], engine.predict
    monkeypatch.setattr(engine, "predict", lambda *args, **kwargs: asked.append(kwargs["amp_dtype"]) or
                        predict(*args, **kwargs))
    Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False, precision="bf16").fit()
    assert asked == [None]
    x = torch.randn(8, 1, 32, 32)
    model = small_model()
    fp32, _ = predict(model, [(x, torch.zeros(8))], "cpu", amp_dtype=None)
    bf16, _ = predict(model, [(x, torch.zeros(8))], "cpu", amp_dtype=torch.bfloat16)
    assert torch.equal(fp32, model.eval()(x)) and not torch.equal(bf16, fp32)  # the dtype asked is the one used


def test_bf16_steps_keep_fp32_weights_and_channels_last_activations(digits):
    model = small_model()
    trainer = Trainer(model, digits, get_recipe("budget", **RECIPE), progress=False, precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}
    def record(module, inputs, out):
        if module.training:  # the test pass runs in fp32
            seen.update(dtype=out.dtype, nhwc=out.is_contiguous(memory_format=torch.channels_last))
    model.layers[0].register_forward_hook(record)
    trainer.fit()
    assert seen == dict(dtype=torch.bfloat16, nhwc=True)


def test_epoch_progress_prints_one_plain_line_per_epoch(digits, capsys):
    Trainer(small_model(), digits, get_recipe("budget", **dict(RECIPE, epochs=2)), progress="epochs").fit()
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert "\r" not in captured.out + captured.err and captured.err == ""


def test_progress_styles_are_checked(digits):
    with pytest.raises(ValueError, match="progress"):
        Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress="widget")


def test_a_ddp_wrapped_model_is_trained_and_saved_as_the_plain_module(digits, tmp_path, monkeypatch):
    class Wrapped(nn.parallel.DistributedDataParallel):  # DDP itself needs a process group
        def __init__(self, module):
            nn.Module.__init__(self)
            self.module = module
    model = small_model()
    trainer = Trainer(Wrapped(model), digits, get_recipe("budget", **RECIPE), out_dir=tmp_path, progress=False)
    assert trainer.model is model
    trainer.fit()
    state = engine.load_checkpoint(tmp_path / "checkpoint.pt", small_model())["model"]
    assert not any(key.startswith("module.") for key in state)


def test_depthwise_convs_compute_in_fp32_under_cpu_bf16_and_are_plain_convs_otherwise():
    from dmcbook.models.common import DepthwiseConv2d
    torch.manual_seed(0)
    depthwise = DepthwiseConv2d(6, 3, stride=2, padding=1, bias=False)
    plain = nn.Conv2d(6, 6, 3, 2, 1, groups=6, bias=False)
    plain.load_state_dict(depthwise.state_dict())  # the same parameters under the same names
    x = torch.randn(2, 6, 9, 9)
    assert torch.equal(depthwise(x), plain(x))
    with torch.autocast("cpu", torch.bfloat16):
        fast, slow = depthwise(x), plain(x)
    assert slow.dtype == torch.bfloat16 and fast.dtype == torch.float32
    assert torch.equal(fast, plain(x))


def test_the_papers_depthwise_convs_are_the_fp32_ones():
    from dmcbook.models.common import DepthwiseConv2d
    for name, options, expected in (("gdfrnet", dict(r=8), 18), ("dmcnet34", {}, 3)):
        net = dmcbook.create_model(name, 10, 1, "cifar", width=16, **options)
        depthwise = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
        assert len(depthwise) == expected and all(isinstance(m, DepthwiseConv2d) for m in depthwise), name
