"""The GitHub workflows cannot run here; what can be checked offline is: they parse, they call
commands that exist in the repository, and they take the repository URL from dmcbook/links.py."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name):
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _runs(workflow) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]


def _uses(workflow) -> list[str]:
    return [step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step]


def test_ci_workflow_runs_the_local_ci_script():
    ci = _load("ci.yml")
    assert any(run.strip() == "bash .ci/run" for run in _runs(ci))
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
    assert "actions/checkout@v4" in _uses(ci)


def test_book_workflow_builds_with_warnings_as_errors_and_deploys_to_pages():
    book = _load("book.yml")
    assert any("jupyter-book build . -W" in run for run in _runs(book))
    assert {"actions/upload-pages-artifact@v3", "actions/deploy-pages@v4"} <= set(_uses(book))
    assert book["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    pinned = next(run for run in _runs(book) if "pip install" in run)
    assert "jupyter-book>=1.0.2,<2" in pinned  # 2.x reads neither _config.yml nor _toc.yml
    assert "jupyter-book>=1.0.2,<2" in (ROOT / "requirements.txt").read_text()


def test_no_workflow_hard_codes_the_repository_url():
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "github.com/" not in text, f"{path.name}: take the URL from dmcbook/links.py"
        assert any("check_repository_url.py" in run for run in _runs(yaml.safe_load(text)))


def _check(url):
    return subprocess.run([sys.executable, str(ROOT / ".github" / "check_repository_url.py"), url],
                          capture_output=True, text=True, check=True).stdout


def test_repository_url_check_reads_links_py():
    from dmcbook.links import REPO_URL
    assert "as dmcbook/links.py says" in _check(REPO_URL)
    assert _check("https://github.com/someone/fork").startswith("::warning::")
