"""Errors around a fit name their cause: cmdstanpy's argument errors name the method's key
(checked with cmdstanpy's own validation and a stand-in executable, no CmdStan needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gmmpipe.config import validate_config
from gmmpipe.errors import FitError
from gmmpipe.fit import run_cmdstan

# Answers `gmm info` as a CmdStan 2.35 executable does; any real run would fail loudly.
FAKE_EXE = """#!/bin/sh
if [ "$1" = info ]; then
  printf 'stan_version_major = 2\\nstan_version_minor = 35\\nstan_version_patch = 0\\n'
  printf 'STAN_THREADS = true\\n'
  exit 0
fi
echo "the stand-in executable must not be run: $*" >&2
exit 3
"""


@pytest.fixture
def fake_model(tmp_path: Path) -> Any:
    """A cmdstanpy model whose executable only answers `info`."""
    import cmdstanpy

    exe = tmp_path / "gmm"
    exe.write_text(FAKE_EXE)
    exe.chmod(0o755)
    return cmdstanpy.CmdStanModel(exe_file=str(exe))


def _spec(method: dict[str, Any]) -> dict[str, Any]:
    """A method config completed with the schema's defaults (validation skipped for `bad`)."""
    config = {
        "datasets": {"d": {"simulate": {"generator": "seed_notebook", "n": 5}, "model": {"K": 1}}},
        "methods": {"m": {"algorithm": method["algorithm"]}},
    }
    spec = validate_config(config)["methods"]["m"]
    spec.update(method)
    return spec


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            {"algorithm": "nuts", "iter_warmup": 0},
            "nuts: cmdstanpy refused the method's arguments (iter_warmup = 0): Must specify "
            "iter_warmup > 0 when adapt_engaged=True.",
        ),
        ({"algorithm": "nuts", "max_treedepth": 0}, "(max_treedepth = 0)"),
        ({"algorithm": "advi", "tol_rel_obj": -1.0}, "(tol_rel_obj = -1.0)"),
        ({"algorithm": "advi", "eta": -0.5}, "(eta = -0.5)"),
        ({"algorithm": "advi", "variational": "lowrank"}, "(variational = 'lowrank')"),
        ({"algorithm": "advi", "output_samples": 0}, "(output_samples = 0)"),
        ({"algorithm": "optimize", "optimizer": "sgd"}, "(optimizer = 'sgd')"),
        ({"algorithm": "pathfinder", "num_paths": 0}, "(num_paths = 0)"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_cmdstanpy_argument_errors_are_fit_errors_naming_the_key(
    fake_model: Any, tmp_path: Path, method: dict[str, Any], message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    data = out / "data.json"
    data.write_text("{}")
    with pytest.raises(FitError) as err:
        run_cmdstan(fake_model, str(data), _spec(method), 1, out, None)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{method['algorithm']}: cmdstanpy refused")
    assert err.value.__cause__ is None and "\n" not in str(err.value)


def test_iter_warmup_zero_is_a_config_error() -> None:
    from gmmpipe.errors import ConfigError

    config = {
        "datasets": {"d": {"simulate": {"generator": "seed_notebook", "n": 5}, "model": {"K": 1}}},
        "methods": {"nuts": {"algorithm": "nuts", "iter_warmup": 0}},
    }
    with pytest.raises(ConfigError, match=r"'methods.nuts.iter_warmup' = 0: 0 is less than"):
        validate_config(config)
