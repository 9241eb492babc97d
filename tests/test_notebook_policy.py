"""What nbval compares, and why it survives a reader's newer libraries.

CI runs nbval in lax mode (``--nbval-lax`` in pyproject.toml): only code cells tagged
``nbval-check-output`` have their outputs compared, and those must hold only what our code
computes, identical in smoke and budget modes: check lines, deterministic counts, tables of them.
Rendered HTML, highlighted source, object reprs, paths, versions and timings change with the
libraries a fresh install resolves, so a compared output that holds one fails here first.
"""
import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "book").glob("*.ipynb")])
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK_TAG = "nbval-check-output"
ALLOWED_DATA = {"text/plain", "text/markdown"}
VOLATILE = {
    "a memory address": re.compile(r"0x[0-9a-fA-F]{6,}"),
    "an object repr": re.compile(r"<[\w.]+ (object|at)\b"),
    "HTML": re.compile(r"<(span|div|table|pre)\b|&quot;|&lt;|&gt;"),
    "an absolute path": re.compile(r"(^|[\s'\"(=:])(/(home|root|tmp|work|usr|opt|var|Users|private|mnt)/|[A-Za-z]:\\)"),
    "a version": re.compile(r"\b(torch|torchvision|numpy|python|timm|cuda|pygments)\s*[=:v]?\s*\d+\.\d+"
                            r"|\d+\.\d+\.\d+\+(cu|cpu)", re.I),
    "a timing": re.compile(r"\b\d+(\.\d+)?\s*(ms|µs|us|s|sec|seconds|min|minutes)\b(?![-\w])|img/s|it/s"),
    "a progress bar": re.compile(r"\d+%\|"),
}
CHECK_LINE = re.compile(r":\s*(True|False)\s*$", re.M)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def compared_problems(cell: dict) -> list[str]:
    """What in ``cell``'s stored outputs nbval should not compare (empty when the cell is fine)."""
    problems = []
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "error":
            problems.append("an error")
            continue
        if kind == "stream":
            if output.get("name") != "stdout":
                problems.append(f"a {output.get('name')} stream")
            texts = [_text(output["text"])]
        else:
            extra = set(output.get("data", {})) - ALLOWED_DATA
            if extra:
                problems.append(f"{', '.join(sorted(extra))} output")
            texts = [_text(v) for k, v in output.get("data", {}).items() if k in ALLOWED_DATA]
        for text in texts:
            problems += [what for what, pattern in VOLATILE.items() if pattern.search(text)]
    return problems


def _cells(path: Path) -> list[tuple[int, dict]]:
    nb = json.loads(path.read_text())
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def _tagged(cell: dict) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def _stdout(cell: dict) -> str:
    return "".join(_text(o["text"]) for o in cell.get("outputs", [])
                   if o["output_type"] == "stream" and o.get("name") == "stdout")


def test_ci_compares_only_tagged_cells():
    addopts = re.search(r'addopts\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert "--nbval-lax" in addopts.split()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markers_are_cell_tags_not_comments(path):
    commented = [i for i, c in _cells(path) if re.search(r"^\s*#\s*(NBVAL|PYTEST_VALIDATE)_", _text(c["source"]), re.M)]
    assert not commented, f"cells {commented}: use the nbval cell tags, not comment markers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_compared_outputs_hold_only_computed_values(path):
    bad = {i: compared_problems(c) for i, c in _cells(path) if _tagged(c)}
    bad = {i: p for i, p in bad.items() if p}
    assert not bad, f"compared cells with volatile output (cell index: what): {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_printed_checks_are_compared(path):
    unchecked = [i for i, c in _cells(path) if CHECK_LINE.search(_stdout(c)) and not _tagged(c)]
    assert not unchecked, f"cells {unchecked} print a check (': True/False') but are not tagged {CHECK_TAG}"


def _all_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(_text(output["text"]))
        for key, value in output.get("data", {}).items():
            if key.startswith("text/"):
                parts.append(_text(value))
        parts += [_text(line) for line in output.get("traceback", [])]
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_paths_in_what_readers_see(path):
    """Compared or not, a stored output never shows the developer's machine."""
    leaky = [i for i, c in _cells(path) if VOLATILE["an absolute path"].search(_all_text(c))]
    assert not leaky, f"cells {leaky} print an absolute path: print it relative to the repository"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_rendered_markup_is_stored(path):
    """HTML and LaTeX renderings (highlighted source, reprs) change with a reader's libraries;
    whether or not nbval compares a cell today, none is stored (show_source stores Markdown)."""
    rendered = [i for i, c in _cells(path) for o in c.get("outputs", [])
                if {"text/html", "text/latex"} & set(o.get("data", {}))]
    assert not rendered, f"cells {rendered} store HTML or LaTeX output"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_keeps_its_equation_checks_compared(path):
    assert sum(_tagged(c) for _, c in _cells(path)) >= 3, "a chapter compares at least three check cells"


def _ends_in_a_bare_glue(source: str) -> bool:
    """A cell whose last statement is ``report.glue(...)`` without ``;`` prints the glued value
    under the cell (glue returns it), a stray number on the page."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics: not a glue cell
        return False
    last = body[-1] if body else None
    call = last.value if isinstance(last, ast.Expr) else None
    name = getattr(getattr(call, "func", None), "attr", getattr(getattr(call, "func", None), "id", None))
    if name != "glue":
        return False
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)]
    return tokens[-1].string != ";"  # as IPython decides, comments aside


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_glued_value_prints_under_its_cell(path):
    stray = [i for i, c in _cells(path) if _ends_in_a_bare_glue(_text(c["source"]))]
    assert not stray, f"cells {stray} end with a glue call: end it with ';'"


def test_a_bare_glue_at_the_end_is_found():
    assert _ends_in_a_bare_glue('x = 1\nreport.glue("x", x)')
    assert not _ends_in_a_bare_glue('report.glue("x", 1);')
    assert not _ends_in_a_bare_glue('report.glue("x", 1)\nprint(2)')
    assert not _ends_in_a_bare_glue('report.glue("x", 1);  # why')
    assert not _ends_in_a_bare_glue('report.glue("x", "#1");')


def _cell(*outputs, tags=(CHECK_TAG,)):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": list(outputs), "source": ""}


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _data(**data):
    return {"output_type": "display_data", "data": {k.replace("_", "/"): v for k, v in data.items()}, "metadata": {}}


@pytest.mark.parametrize("output, what", [
    (_stream("<torch.nn.Linear object at 0x7f3a2b1c9d00>"), "a memory address"),
    (_stream("ResNet(<dmcbook.models.Foo object>)"), "an object repr"),
    (_data(text_html="<pre>x</pre>", text_plain="x"), "text/html output"),
    (_data(text_plain='<span class="s2">&quot;a&quot;</span>'), "HTML"),
    (_stream("results in /work/main/results/04_drstn/budget"), "an absolute path"),
    (_stream("torch 2.15.0+cu132"), "a version"),
    (_stream("epoch 1 done in 57 s"), "a timing"),
    (_stream("350 img/s"), "a timing"),
    (_stream(" 40%|####      | 50/125"), "a progress bar"),
    (_stream("UserWarning: deprecated", name="stderr"), "a stderr stream"),
    ({"output_type": "error", "ename": "E", "evalue": "", "traceback": []}, "an error"),
])
def test_the_scanner_sees_each_volatile_kind(output, what):
    assert what in compared_problems(_cell(output))


def test_the_scanner_passes_check_lines_and_tables():
    table = "| model | params (M) |\n|---|---|\n| drstn_v5 | 3.12 |"
    cell = _cell(_stream("Eq. (15): |ours - direct| < 1e-12: True\nstage 3 has 2 blocks\n"),
                 _data(text_markdown=table, text_plain=table))
    assert compared_problems(cell) == []
