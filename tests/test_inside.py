"""dmcbook.inside: the chapters' probes live apart from the networks and keep their names."""
import importlib
import subprocess
import sys


def test_models_import_neither_the_probes_nor_plotting():
    # dmcbook.models is what a user imports to train: the chapters' probes (dmcbook.inside) and
    # the plotting stack must not come with it. A fresh interpreter, so nothing is cached.
    code = ("import sys, dmcbook.models; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
            "or m in ('dmcbook.viz', 'dmcbook.inside') or m.startswith('dmcbook.inside.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_inside_modules_import_and_keep_the_chapters_names():
    names = {"dmcnet": ["capture_inputs", "mask_variants", "param_breakdown", "plot_dynamic_masks",
                        "branch_receptive_fields"],
             "gdfrnet": ["frm_maps", "detail_statistics", "gradient_norms_by_stage", "inside_gdfrnet",
                         "parameter_breakdown"],
             "resneskt": ["attention_details", "plot_spatial_kernel_attention"],
             "drstn": ["threshold_statistics", "stage_table"]}
    for paper, functions in names.items():
        module = importlib.import_module(f"dmcbook.inside.{paper}")
        assert all(callable(getattr(module, f)) for f in functions)
        assert not any(hasattr(importlib.import_module(f"dmcbook.models.{paper}"), f) for f in functions)
