"""The default config's full DAG, built without CmdStan (`snakemake -n` in a copy)."""

from __future__ import annotations

import re
import shutil

from workflow_helpers import copy_workflow, output, scheduled_outputs, scheduled_rules, snakemake


def test_default_config_builds_the_full_dag(tmp_path, root):
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "config").mkdir(exist_ok=True)
    shutil.copyfile(root / "config" / "config.yaml", workdir / "config" / "config.yaml")
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, output(result)
    rules = scheduled_rules(result)
    datasets, methods = (
        ("seed_small", "seed_large"),
        ("optimize", "nuts", "advi_meanfield", "advi_fullrank", "pathfinder"),
    )
    assert rules["compile"] == 1
    assert rules["simulate"] == 2
    assert rules["sample"] == 2 and rules["optimize"] == 2 and rules["pathfinder"] == 2
    assert rules["variational"] == 4
    assert rules["summarize"] == 2
    outputs = scheduled_outputs(result)
    for dataset in datasets:
        assert f"results/data/{dataset}.csv" in outputs
        assert f"results/tables/{dataset}_comparison.csv" in outputs
        for method in methods:
            assert f"results/fits/{dataset}/{method}/posterior.nc" in outputs
    # ADVI starts from the MAP: its job takes the optimize fit of the same dataset as input
    jobs = re.findall(r"rule variational:\n\s+input: (.*)\n\s+output: (.*)", output(result))
    (inputs,) = [i for i, o in jobs if "seed_large/advi_meanfield/posterior.nc" in o]
    assert "results/fits/seed_large/optimize/posterior.nc" in inputs
