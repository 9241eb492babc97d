"""Compare the repository URL that the book, the Colab badges and pyproject use (the one in
dmcbook/links.py, run on its own: it imports nothing, so no install is needed) with the repository a workflow runs in.

A fork or a renamed repository still builds; the mismatch is reported as a workflow warning so
that the links readers click are fixed in the one place that holds them."""
import runpy
import sys
from pathlib import Path

LINKS = Path(__file__).resolve().parents[1] / "dmcbook" / "links.py"


def main(actual: str) -> int:
    expected = runpy.run_path(str(LINKS))["REPO_URL"]
    if expected.rstrip("/").lower() != actual.rstrip("/").lower():
        print(f"::warning::dmcbook/links.py names {expected}, but this is {actual}: "
              "set REPO_URL there so the book's and the badges' links point here")
    else:
        print(f"repository URL {expected}: as dmcbook/links.py says")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: check_repository_url.py https://github.com/OWNER/NAME")
    sys.exit(main(sys.argv[1]))
