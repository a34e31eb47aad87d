"""The default config validates and gets its defaults; cross-key checks of methods."""

from __future__ import annotations

import copy

import pytest
import yaml

from gmmpipe.config import derived_seed, fits, validate_config
from gmmpipe.errors import ConfigError


@pytest.fixture
def default(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def test_default_config_validates_with_defaults(default):
    before = copy.deepcopy(default)
    config = validate_config(default)
    assert config["methods"]["nuts"]["adapt_delta"] == 0.8
    assert config["methods"]["nuts"]["metric"] == "dense_e"
    assert config["datasets"]["seed_small"]["simulate"]["seed"] == 123
    assert config["datasets"]["seed_large"]["simulate"]["drawn_before"] == [100]
    assert config["diagnostics"]["rhat_max"] == 1.01
    assert len(fits(config)) == len(config["datasets"]) * len(config["methods"])
    assert default == before, "input must not be mutated"


def test_init_must_name_a_method(default):
    bad = copy.deepcopy(default)
    bad["methods"]["advi_meanfield"]["init"] = "nope"
    with pytest.raises(ConfigError, match=r"methods\.advi_meanfield\.init' = 'nope'"):
        validate_config(bad)


def test_init_loop_is_rejected(default):
    bad = copy.deepcopy(default)
    bad["methods"]["advi_meanfield"]["init"] = "advi_fullrank"
    bad["methods"]["advi_fullrank"]["init"] = "advi_meanfield"
    with pytest.raises(ConfigError, match="loops"):
        validate_config(bad)


def test_derived_seeds_are_stable_and_distinct():
    seeds = {derived_seed(7, d, m) for d in ("a", "b") for m in ("nuts", "advi")}
    assert len(seeds) == 4
    assert derived_seed(7, "a", "nuts") == derived_seed(7, "a", "nuts")
    assert all(0 <= s < 2**31 for s in seeds)
