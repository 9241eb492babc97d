"""The book's configuration agrees with the package: one repository URL, notebooks not executed
at build time, every page in the table of contents present."""
import json
from pathlib import Path

import pytest
import yaml

from dmcbook.links import REPO_URL
from dmcbook.notebook import colab_badge, first_cell

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_config_names_the_same_repository_and_renders_stored_outputs():
    assert CONFIG["repository"]["url"] == REPO_URL
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert (ROOT / CONFIG["bibtex_bibfiles"][0]).exists()
    assert f'Repository = "{REPO_URL}"' in (ROOT / "pyproject.toml").read_text()


def test_every_toc_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in toc["chapters"]]
    missing = [f for f in files if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_start_with_the_set_up_cell_and_are_committed_executed(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    source = "".join(code[0]["source"])
    assert REPO_URL in source and "setup(" in source
    assert source.splitlines()[:5] == first_cell("x", "y", "z").splitlines()[:5]
    assert all(c["execution_count"] is not None for c in code), "commit the notebook executed"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    opening = "".join(nb["cells"][0]["source"])
    assert colab_badge(f"notebooks/{path.name}") in opening, "the Colab badge must come from dmcbook.links"


def test_shipped_weights_stay_small_and_are_each_recorded_by_their_run():
    """Readers download the repository: the shipped budget weights stay within 20 MB in all, and
    each file is the one its run's history names (checksum included)."""
    shipped = sorted((ROOT / "results").glob("**/weights.safetensors"))
    assert sum(p.stat().st_size for p in shipped) <= 20 * 2 ** 20
    for path in shipped:
        weights = json.loads((path.parent / "history.json").read_text())["weights"]
        assert weights["file"] == path.name and len(weights["sha256"]) == 64


@pytest.mark.parametrize("path", [*NOTEBOOKS, *sorted((ROOT / "book").glob("*.ipynb"))], ids=lambda p: p.name)
def test_shown_code_fits_the_page(path):
    """The chapter guide: code fits the page, 88 columns, in every cell a reader sees (shown or
    collapsed); only cells the book removes may run longer."""
    long_lines = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        hidden = {"remove-cell", "remove-input"} & set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] == "code" and not hidden:
            long_lines += [f"cell {i}: {line[:40]}..." for line in "".join(cell["source"]).splitlines()
                           if len(line) > 88]
    assert not long_lines, long_lines


@pytest.mark.parametrize("path", [*NOTEBOOKS, *sorted((ROOT / "book").glob("*.ipynb"))], ids=lambda p: p.name)
def test_stored_figures_fit_the_page(path):
    """The chapter guide: figures at most about 7.5 in wide at the stored 90 dpi (675 px), as
    stored, after the inline backend's tight box and padding (viz.PAGE_STYLE)."""
    import base64
    import struct
    from dmcbook.viz import PAGE_STYLE, PAGE_WIDTH
    limit = PAGE_WIDTH * PAGE_STYLE["figure.dpi"] + 5  # the padding, and a pixel of rounding
    wide = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                width = struct.unpack(">I", base64.b64decode(png)[16:20])[0]
                if width > limit:
                    wide.append(f"cell {i}: {width} px")
    assert not wide, f"figures wider than {limit:.0f} px: {wide}"
