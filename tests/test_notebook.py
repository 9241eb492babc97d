"""The chapter set-up: modes from the environment, paths a reader can share, the GPU-time estimate."""
import pytest
import torch

from dmcbook import notebook
from dmcbook.notebook import gpu_minutes, source_bundle


@pytest.mark.parametrize("env, cuda, expected", [
    ({}, False, "budget"),
    ({}, True, "colab"),               # a Colab GPU runs the 30-minute tier unless paper is asked for
    ({"DMCBOOK_MODE": "paper"}, True, "paper"),
    ({"DMCBOOK_MODE": "colab"}, False, "colab"),
    ({"DMCBOOK_SMOKE": "1", "DMCBOOK_MODE": "paper"}, True, "smoke"),
])
def test_mode_comes_from_the_environment(monkeypatch, env, cuda, expected):
    monkeypatch.delenv("DMCBOOK_MODE", raising=False)
    monkeypatch.delenv("DMCBOOK_SMOKE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert notebook.current_mode() == expected


def test_unknown_mode_names_the_valid_ones(monkeypatch):
    monkeypatch.delenv("DMCBOOK_SMOKE", raising=False)
    monkeypatch.setenv("DMCBOOK_MODE", "fast")
    with pytest.raises(ValueError, match="'smoke', 'budget', 'colab', 'paper'"):
        notebook.current_mode()


@pytest.mark.parametrize("mode, recipe, dataset", [("budget", "budget", "fashion-mnist"),
                                                   ("colab", "drstn", "cifar10"), ("paper", "drstn", "cifar10")])
def test_setup_prints_paths_relative_to_the_repository(monkeypatch, capsys, tmp_path, mode, recipe, dataset):
    monkeypatch.delenv("DMCBOOK_SMOKE", raising=False)
    monkeypatch.setenv("DMCBOOK_MODE", mode)
    (tmp_path / "_config.yml").write_text("")
    (tmp_path / "dmcbook").mkdir()
    monkeypatch.chdir(tmp_path / "dmcbook")
    session = notebook.setup("04_drstn", paper_recipe="drstn", paper_dataset="cifar10", style=False)
    printed = capsys.readouterr().out
    assert (session.recipe, session.dataset) == (recipe, dataset)
    assert f"results in results/04_drstn/{mode}" in printed
    assert str(tmp_path) not in printed


def test_gpu_estimate_scales_with_work_and_gpu():
    base = gpu_minutes("resnet18", (3, 32, 32), images=50_000, epochs=1)
    assert base == pytest.approx(2 * gpu_minutes("resnet18", (3, 32, 32), images=25_000, epochs=1))
    assert gpu_minutes("resnet34", (3, 32, 32), images=50_000, epochs=1) > 1.8 * base
    assert gpu_minutes("resnet18", (3, 32, 32), images=50_000, epochs=1, gpu="A100") < base / 5
    # ResNet-18 at 32x32 is 0.56 GMACs: 50k images x 3 passes x 1.11 GFLOP / 5 TFLOP/s = 0.56 min.
    assert base == pytest.approx(0.56, rel=0.05)


@pytest.mark.parametrize("kwargs, message", [(dict(images=0, epochs=1), "images"),
                                             (dict(images=10, epochs=0), "epochs"),
                                             (dict(images=10, epochs=1, gpu="K80"), "unknown gpu")])
def test_gpu_estimate_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gpu_minutes("resnet18", (3, 32, 32), **kwargs)


def test_source_is_shown_as_markdown_and_text_never_as_rendered_html():
    bundle = source_bundle(gpu_minutes)
    assert set(bundle) == {"text/markdown", "text/plain"}
    assert bundle["text/plain"].startswith("def gpu_minutes(") and bundle["text/plain"].endswith("return seconds / 60")
    assert bundle["text/markdown"] == f"```python\n{bundle['text/plain']}\n```"


@pytest.mark.parametrize("mode, recipe, where", [("budget", "converge", "results/campaign/converge"),
                                                 ("colab", "converge", "results/campaign/converge"),
                                                 ("smoke", "smoke", "a scratch folder")])
def test_a_cpu_recipe_replaces_budget_and_files_shared_runs_in_one_folder(monkeypatch, capsys, tmp_path, mode,
                                                                          recipe, where):
    monkeypatch.delenv("DMCBOOK_SMOKE", raising=False)
    monkeypatch.setenv("DMCBOOK_MODE", mode)
    (tmp_path / "_config.yml").write_text("")
    (tmp_path / "dmcbook").mkdir()
    monkeypatch.chdir(tmp_path)
    session = notebook.setup("05_head_to_head", paper_recipe="converge", paper_dataset="fashion-mnist",
                             style=False, cpu_recipe="converge")
    assert session.recipe == recipe and where in capsys.readouterr().out
    cell = notebook.first_cell("05_head_to_head", "converge", "fashion-mnist", "converge")
    assert cell.endswith('cpu_recipe="converge")') and max(map(len, cell.splitlines())) <= 88


def test_a_table_shows_a_column_that_only_a_later_row_has():
    from dmcbook.report import markdown_table
    table = markdown_table([{"network": "a", "speed-up": 1.3}, {"network": "b", "error": "failed"}])
    assert table.splitlines()[0] == "| network | speed-up | error |"
    assert table.splitlines()[3].startswith("| b | ") and table.splitlines()[3].endswith(" | failed |")


def test_a_pipe_inside_a_cell_stays_in_its_cell():
    from markdown_it import MarkdownIt

    from dmcbook.report import markdown_table
    table = markdown_table([{"network": "v4", "gate |w|": 0.5, "note": "a|b"}])
    html = MarkdownIt("commonmark").enable("table").render(table)
    assert html.count("<th>") == 3 and html.count("<td>") == 3 and "<th>gate |w|</th>" in html


def test_glue_stores_numpy_and_torch_scalars_as_python_numbers(monkeypatch):
    import myst_nb
    import numpy as np
    import torch
    from dmcbook import report
    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: stored.__setitem__(name, value))
    monkeypatch.setattr(report, "_ipython_display", lambda: print)
    report.glue("width", np.float64(0.8188))
    report.glue("count", torch.tensor(3))
    report.glue("rows", np.array([1.0, 2.0]))  # not a scalar: left as it is
    assert type(stored["width"]) is float and stored["width"] == 0.8188
    assert type(stored["count"]) is int and isinstance(stored["rows"], np.ndarray)
    assert repr(stored["width"]) == "0.8188"  # what myst-nb formats with {glue:text}`width:.2f`


def test_words_lists_items_as_prose():
    from dmcbook.report import words
    assert [words([]), words([1]), words([1, 2]), words([1, 2, 4])] == ["none", "1", "1 and 2", "1, 2 and 4"]
    assert words([], empty="no stage") == "no stage"
    from dmcbook.report import count
    assert [count(0, "run"), count(1, "seed"), count(3, "seed")] == ["0 runs", "1 seed", "3 seeds"]
