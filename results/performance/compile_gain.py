"""Does ``torch.compile`` make the campaign's training steps cheaper on this CPU?

For a few configurations of ``dmcbook.campaign.PLAN`` (the plain ResNet-18, and the paper networks
whose steps cost most above their MACs: ``campaign_costs.json``), the eager training step against
the same step through ``torch.compile`` (inductor, default options), in alternating rounds in one
process with one torch thread, as the campaign's workers run; also the seconds the first compiled
step took (compilation of forward and backward). A configuration whose compiled step fails keeps
the error's first line. Everything else as in ``campaign_costs.py``, whose step this reuses.
The compiler's cache starts empty, so the first step's time is what a fresh process pays.

Run from the repository root: ``python results/performance/compile_gain.py``. Writes
``compile_gain.json`` here; named configurations are re-measured alone, as in ``campaign_costs.py``.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()  # before torch reads it

import torch  # noqa: E402

from campaign_costs import BATCH, ROUNDS, SHAPE, STEPS, chosen, keep_others, seconds, training_step  # noqa: E402
from dmcbook import campaign  # noqa: E402
from dmcbook.profile import machine  # noqa: E402

CONFIGURATIONS = ("resnet18", "drstn_v5", "dmcnet34", "gdfrnet", "resneskt50")

if __name__ == "__main__":
    names = chosen(sys.argv[1:], CONFIGURATIONS)
    torch.set_num_threads(1)
    results = dict(machine=machine(), batch=BATCH, input=list(SHAPE), steps=STEPS, rounds=ROUNDS,
                   torch=torch.__version__, configurations=[])
    by_variant = {spec.variant: spec for spec in campaign.PLAN}
    for variant in (v for v in CONFIGURATIONS if v in names):
        eager, precision = training_step(by_variant[variant])
        row = {"configuration": variant, "precision": precision}
        start = time.perf_counter()
        try:
            compiled, _ = training_step(by_variant[variant], compiled=True)
        except Exception as err:  # a compiler failure is a result here, not a crash
            row.update({"first compiled step (s)": round(time.perf_counter() - start),
                        "error": str(err).strip().splitlines()[0][:200]})
        else:
            row["first compiled step (s)"] = round(time.perf_counter() - start)
            speed_ups = [seconds(eager) / seconds(compiled) for _ in range(ROUNDS)]
            row["compiled speed-up"] = round(statistics.mean(speed_ups), 2)
        results["configurations"].append(row)
        print(row, flush=True)
    results["machine_after"] = machine()
    path = Path(__file__).with_name("compile_gain.json")
    path.write_text(json.dumps(keep_others(path, results, names, CONFIGURATIONS), indent=1))
