"""The default config's full DAG, built without CmdStan (`snakemake -n` in a copy)."""

from __future__ import annotations

import re
import shutil

import yaml
from workflow_helpers import (
    copy_workflow,
    output,
    scheduled_outputs,
    scheduled_rules,
    snakemake,
    write_config,
)

from gmmpipe.layout import fit_dir


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
    assert rules["summarize"] == 2 and rules["membership"] == 2 and "compare" not in rules
    outputs = scheduled_outputs(result)
    for dataset in datasets:
        assert f"results/data/{dataset}.csv" in outputs
        assert f"results/tables/{dataset}/K2_comparison.csv" in outputs
        assert f"results/compare/{dataset}/loo.csv" not in outputs  # one K: nothing to rank
        assert f"{fit_dir(dataset, 2, 'nuts')}/membership.csv" in outputs
        for method in methods:
            assert f"{fit_dir(dataset, 2, method)}/posterior.nc" in outputs
    # ADVI starts from the MAP: its job takes the optimize fit of the same dataset as input
    jobs = re.findall(r"rule variational:\n\s+input: (.*)\n\s+output: (.*)", output(result))
    (inputs,) = [i for i, o in jobs if "seed_large/K2/advi_meanfield/posterior.nc" in o]
    assert f"{fit_dir('seed_large', 2, 'optimize')}/posterior.nc" in inputs


def test_a_list_of_k_is_one_fit_per_k_and_one_comparison(tmp_path, root):
    workdir = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["datasets"]["seed_small"]["model"]["K"] = [1, 2, 3]
    config["methods"]["laplace"] = {"algorithm": "laplace", "init": "optimize"}
    config["targets"] = {"datasets": ["seed_small"], "methods": ["optimize", "laplace"]}
    write_config(workdir, config)
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, output(result)
    rules = scheduled_rules(result)
    assert rules["optimize"] == 3 and rules["laplace"] == 3
    assert rules["compare"] == 1 and rules["membership"] == 3 and rules["summarize"] == 3
    outputs = scheduled_outputs(result)
    for k in (1, 2, 3):
        assert f"{fit_dir('seed_small', k, 'laplace')}/membership.csv" in outputs
        assert f"results/tables/seed_small/K{k}_comparison.csv" in outputs
    # the comparison reads the compared method's fit of every K (laplace: optimize has no draws)
    (inputs,) = re.findall(r"rule compare:\n\s+input: (.*)\n", output(result))
    for k in (1, 2, 3):
        assert f"{fit_dir('seed_small', k, 'laplace')}/posterior.nc" in inputs


def test_the_compared_method_is_the_first_nuts_method_of_the_targets(tmp_path, root):
    """The targets' order, not the alphabet's: `nuts_long` before `nuts`."""
    workdir = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["datasets"]["seed_small"]["model"]["K"] = [2, 3]
    config["methods"]["nuts_long"] = {**config["methods"]["nuts"], "iter_sampling": 2000}
    config["targets"] = {"datasets": ["seed_small"], "methods": ["nuts_long", "nuts"]}
    write_config(workdir, config)
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, output(result)
    (inputs,) = re.findall(r"rule compare:\n\s+input: (.*)\n", output(result))
    assert f"{fit_dir('seed_small', 2, 'nuts_long')}/posterior.nc" in inputs
    assert f"{fit_dir('seed_small', 2, 'nuts')}/posterior.nc" not in inputs
    outputs = scheduled_outputs(result)
    assert f"{fit_dir('seed_small', 3, 'nuts_long')}/membership.csv" in outputs
    assert f"{fit_dir('seed_small', 3, 'nuts')}/membership.csv" not in outputs
