"""The one place that names the repository; the book's _config.yml and the notebooks' Colab
links must agree with it (tests/test_book.py checks)."""
REPO = "dmcbook/dmcbook"
REPO_URL = f"https://github.com/{REPO}"
BRANCH = "main"


def colab_url(notebook: str) -> str:
    """The Colab address of a notebook in the repository, e.g. ``notebooks/04_drstn.ipynb``."""
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{notebook}"
