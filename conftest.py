"""Project-wide pytest set-up: notebooks run by nbval (and anything else) use smoke mode.

The variable is set here, before nbval starts any kernel, so the kernels inherit it."""
import os

os.environ.setdefault("DMCBOOK_MODE", "smoke")
os.environ["DMCBOOK_SMOKE"] = os.environ.get("DMCBOOK_SMOKE", "1")
