"""Chapter 02's look inside the converged GDFRNet (campaign run gdfrnet-seed0), measured once.

The run's weights (2.8 M parameters, 5.6 MB even in fp16) are too large to ship with the book, so
this script, run in the checkout that trained the run (it reads the run's ``best.pt``, which git
never carries), computes the statistics the chapter shows and writes them beside it as JSON::

    python results/campaign/inside/gdfrnet_seed0.py
"""
import json
from pathlib import Path

from dmcbook import campaign
from dmcbook.data import get_data
from dmcbook.experiments import build_network
from dmcbook.inside.gdfrnet import attention_statistics, fusion_statistics
from dmcbook.train import load_checkpoint, save_json

RUN = "gdfrnet-seed0"
folder = campaign.session().results_dir / RUN
history = json.loads((folder / "history.json").read_text())
network = build_network(history)
best = load_checkpoint(folder / "best.pt", network)
network.eval()
# The chapter's Fashion-MNIST test images: the first 256 of its 2 000-image test subset.
fashion = get_data("fashion-mnist", augment="none", test_subset=2000, seed=0, batch_size=256)
images = next(iter(fashion.test_loader))[0][:256]
save_json({"run": RUN, "epoch": best["epoch"] + 1, "epochs": len(history["epochs"]),
           "data": history["config"]["data"], "images": len(images),
           "attention": attention_statistics(network, images),
           "fusion": fusion_statistics(network, images)},
          Path(__file__).with_suffix(".json"))
