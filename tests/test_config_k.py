"""K as a list, the `compare` section and the laplace method in the config."""

from __future__ import annotations

from typing import Any

import pytest
from workflow_helpers import small_config

from gmmpipe.config import Fit, compare_method, fits, model_ks, validate_config, with_k
from gmmpipe.errors import ConfigError
from gmmpipe.layout import fit_dir


def _config(k: Any) -> dict[str, Any]:
    config = small_config()
    (dataset,) = config["datasets"]
    config["datasets"][dataset]["model"]["K"] = k
    config["methods"]["lap"] = {"algorithm": "laplace", "init": "map"}
    return config


def test_a_list_of_k_expands_into_one_fit_per_k():
    config = validate_config(_config([3, 1, 2]))
    (dataset,) = config["datasets"]
    assert model_ks(config["datasets"][dataset]["model"]) == [1, 2, 3]
    got = fits(config)
    assert got[:2] == [Fit(dataset, 1, "map"), Fit(dataset, 1, "lap")] and len(got) == 6
    assert fit_dir(*got[-1]) == f"results/fits/{dataset}/K3/lap"
    assert with_k(config["datasets"][dataset], 2)["model"]["K"] == 2
    assert config["methods"]["lap"]["draws"] == 1000  # laplace defaults filled in
    assert config["compare"]["elpd_margin"] == 4.0 and config["compare"]["max_refits"] == 10


def test_a_single_k_is_a_one_element_list():
    config = validate_config(_config(2))
    assert [f.k for f in fits(config)] == [2, 2]


@pytest.mark.parametrize(
    "k,message",
    [([], "K"), ([0, 2], "K"), ([2, 2], "K"), ("2", "K"), (2.0, "K")],
)
def test_bad_k_names_the_key(k, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(k))


def test_k_larger_than_n_is_refused():
    config = _config([2, 500])  # the dataset has 60 points
    with pytest.raises(ConfigError, match=r"smaller than .*K' = 500"):
        validate_config(config)


def test_compare_method():
    config = validate_config(_config([1, 2]))
    assert compare_method(config, ["map", "lap"]) == "lap"  # no NUTS: the approximation
    assert compare_method(config, ["map"]) is None  # nothing with draws: no comparison
    config["compare"]["method"] = "map"
    with pytest.raises(ConfigError, match=r"'compare\.method' = 'map': its algorithm is optimize"):
        compare_method(config, ["map", "lap"])
    config["compare"]["method"] = "nope"
    with pytest.raises(ConfigError, match="not in 'methods'"):
        compare_method(config, ["map"])
    config["compare"]["method"] = "lap"
    config["methods"]["lap"]["draws"] = 99  # too few for PSIS-LOO, which a K list needs
    with pytest.raises(ConfigError, match=r"method 'lap' gives 99 draws; PSIS-LOO needs at least"):
        compare_method(config, ["map", "lap"])
    (dataset,) = config["datasets"]
    config["datasets"]["other"] = config["datasets"][dataset]
    config["datasets"][dataset] = {**config["datasets"][dataset], "model": {"K": 2}}
    config["targets"]["datasets"] = [dataset]  # the dataset with a K list is not a target
    assert compare_method(config, ["map", "lap"]) == "lap"
    config["targets"]["datasets"] = []  # every dataset, "other" too
    with pytest.raises(ConfigError, match="gives 99 draws"):
        compare_method(config, ["map", "lap"])


def test_sbc_needs_one_k():
    from gmmpipe.sbc_plan import check_sbc_config

    config = validate_config({**_config(2), "sbc": {"methods": [], "model": {"K": [1, 2]}}})
    with pytest.raises(ConfigError, match=r"'sbc\.model\.K' = \[1, 2\]: SBC needs one K"):
        check_sbc_config(config)
