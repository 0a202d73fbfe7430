"""Merge hyper-parameters declared once (acm_exp.merge_parameters), and str enums for fixed choices.

A declaration reaches the config schema, the validation, the results columns and the merge
fingerprint; a method sees only the parameters it declares; a bad choice fails when Hydra composes
the config; the enums leave every hash, fingerprint and saved YAML as it was with plain strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from app_config import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from acm_exp.choices import Choice
from acm_exp.config import Against, MergeConfig
from acm_exp.errors import ConfigError
from acm_exp.merge import registry
from acm_exp.merge.engine import Adjustment, merge_tensor, request_fingerprint
from acm_exp.merge.registry import MergeMethod, get_method, register, registered_methods
from acm_exp.merge.sparsify import weighted_sum
from acm_exp.merge.validation import validate_merge_config
from acm_exp.merge_parameters import MERGE_PARAMETERS, SCALE, Parameter, Relax
from acm_exp.results import HYPER_PARAMETERS, config_hash

REPO = Path(__file__).resolve().parent.parent

# A parameter no method has: a test method declares it.
BETA = Parameter("beta", 0.5, "β", "test: extra scale of the task vectors", low=0.0, high=1.0)


def beta_delta(task_vectors, weights, params, generator):
    return weighted_sum(task_vectors, [params.scale * params.beta * w for w in weights])


def reads_k_undeclared_delta(task_vectors, weights, params, generator):
    return weighted_sum(task_vectors, [params.scale * params.k * w for w in weights])


@pytest.fixture
def temporary_registry():
    """Methods and parameters registered inside a test are gone after it."""
    methods, declared = dict(registered_methods()), dict(MERGE_PARAMETERS)
    yield
    for table, saved in ((registry.METHODS, methods), (MERGE_PARAMETERS, declared)):
        table.clear()
        table.update(saved)


def merge_config(method: str, **values) -> OmegaConf:
    """A merge config of every schema field plus any extra parameter a test method declares."""
    return OmegaConf.create({**dataclasses.asdict(MergeConfig(method=method)), **values})


def test_every_parameter_is_declared_once_and_every_method_has_a_label():
    methods = registered_methods().values()
    for method in methods:
        assert method.label, method.name
        for parameter in method.parameters:
            assert MERGE_PARAMETERS[parameter.name] is parameter
    assert len({method.label for method in methods}) == len(methods)
    assert HYPER_PARAMETERS == tuple(MERGE_PARAMETERS)
    schema_fields = [f.name for f in dataclasses.fields(MergeConfig)]
    assert schema_fields[1 : 1 + len(MERGE_PARAMETERS)] == list(MERGE_PARAMETERS)
    assert get_method("acm_ties").label == "ACM-TIES" and get_method("task_arithmetic").label == "TA"


def test_a_declared_parameter_reaches_validation_fingerprint_and_the_unused_warning(temporary_registry, caplog):
    MERGE_PARAMETERS[BETA.name] = BETA
    method = register(MergeMethod("beta_ta", beta_delta, parameters=(SCALE, BETA), label="β-TA"))

    assert validate_merge_config(merge_config("beta_ta", beta=0.25)) is method
    with pytest.raises(ConfigError, match=r"^merge.beta=1.5; expected a number in \[0, 1\]$"):
        validate_merge_config(merge_config("beta_ta", beta=1.5))

    fingerprints = {
        beta: request_fingerprint(method, merge_config("beta_ta", beta=beta), "b", ["f"], {}) for beta in (0.25, 0.5)
    }
    assert fingerprints[0.25] != fingerprints[0.5]

    with caplog.at_level(logging.WARNING, logger="acm_exp"):
        validate_merge_config(merge_config("ties", beta=0.25))
    assert any("merge.beta=0.25 is not used by merge=ties" in message for message in caplog.messages)

    base, tuned = torch.zeros(3), torch.full((3,), 2.0)
    merged = merge_tensor(base, [tuned], method, merge_config("beta_ta", beta=0.25), Adjustment(), torch.Generator())
    torch.testing.assert_close(merged, torch.full((3,), 0.5))


def test_a_registered_parameter_must_be_declared(temporary_registry):
    with pytest.raises(RuntimeError, match="parameter 'beta' is not declared"):
        register(MergeMethod("beta_ta", beta_delta, parameters=(SCALE, BETA), label="β-TA"))


def test_a_declared_parameter_becomes_a_config_field_and_a_results_column():
    # The schema and the results columns are built when their modules load: declare first, in a
    # fresh interpreter, so this test's process never sees the extra parameter.
    code = textwrap.dedent(
        """
        import dataclasses
        from acm_exp import merge_parameters
        merge_parameters.MERGE_PARAMETERS["beta"] = merge_parameters.Parameter("beta", 0.5, "b", "doc", high=1.0)
        from acm_exp.config import MergeConfig
        from acm_exp.results import HYPER_PARAMETERS, SCHEMA
        print({f.name: f.default for f in dataclasses.fields(MergeConfig)}["beta"], "beta" in HYPER_PARAMETERS,
              SCHEMA.field("beta").type)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.5", "True", "double"]


def test_a_method_reading_an_undeclared_parameter_fails_loudly(temporary_registry):
    method = register(MergeMethod("sloppy_ta", reads_k_undeclared_delta, parameters=(SCALE,), label="sloppy"))
    with pytest.raises(AttributeError, match=r"merge method 'sloppy_ta' reads merge.k, which it does not declare"):
        merge_tensor(
            torch.zeros(3), [torch.ones(3)], method, MergeConfig(method="sloppy_ta"), Adjustment(), torch.Generator()
        )


@pytest.mark.parametrize(
    ("override", "choices"),
    [
        (("merge=aim", "merge.relax=norms"), "[all, linear]"),
        (("merge=acm_ties", "merge.reduce=median"), "[mean_of_sigmoids, sigmoid_of_mean]"),
        (("acm.against=both",), "[finetuned, merged]"),
        (("acm.binning=log",), "[uniform, quantile]"),
        (("calibration.cluster_pick=farthest",), "[reference, nearest, random]"),
        (("merge=sens", "sens.format=mixed"), "[l2s, template]"),
        (("eval.code_grading=strict",), "[official, lenient]"),
    ],
)
def test_a_bad_choice_fails_when_hydra_composes_the_config(override, choices):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(*override)
    bad_value = override[-1].split("=")[1]
    assert bad_value in str(error.value)
    assert f"Invalid value '{bad_value}', expected one of {choices}" in str(error.value.__cause__)


def test_a_choice_reads_as_its_string():
    for member in (Relax.linear, Against.merged):
        assert isinstance(member, Choice)
        assert member == member.value and f"{member}" == str(member) == f"{member:s}" == member.value
        assert json.dumps({"x": member}) == json.dumps({"x": member.value})
        assert {member.value: 1}[member] == 1
    cfg = compose_config("merge=aim", "merge.relax=linear")
    assert cfg.merge.relax is Relax.linear
    assert "relax: linear\n" in OmegaConf.to_yaml(cfg.merge)


# Computed with the code before the declarations and enums (plain str fields), from these very
# overrides: config hash, merge fingerprint, and the sha256 of the resolved YAML and JSON of the
# groups the change touched (recomputed, with plain-string configs, when merge.tied_embedding was added,
# and when calibration.response_template was added and sens.device became auto: hash and fingerprint kept).
SAMPLES = {
    (
        "merge=aim",
        "merge.relax=linear",
        "merge.base_method=dare",
        "merge.combine=ties",
        "acm.against=merged",
        "acm.estimator=histogram",
        "acm.bins=16",
        "acm.binning=quantile",
        "calibration.cluster_pick=random",
        "sens.format=template",
        "eval.code_grading=lenient",
    ): ("f523e8e18b138342", "272ea7c2c9d48a67", "6b029dc0365c8e25", "30295ef5ddf82d34"),
    ("merge=acm_dare", "merge.reduce=sigmoid_of_mean", "merge.shift=global_max"): (
        "f7cfcd8ca8c65cb4",
        "c2bcc96a28d2c818",
        "03fbcd4a94056675",
        "24166a00e4af9f5d",
    ),
    ("merge=sens", "sens.format=template"): (
        "c54b308e009561bf",
        "a067fe24e4c845a4",
        "6dffe93c9cb157f5",
        "6ae7358a36fd9780",
    ),
}


@pytest.mark.parametrize("overrides", list(SAMPLES))
def test_hashes_fingerprints_and_saved_yaml_are_those_of_plain_strings(overrides):
    cfg = compose_config(*overrides)
    subset = OmegaConf.create({group: cfg[group] for group in ("merge", "acm", "sens", "calibration")})
    subset.code_grading = cfg.eval.code_grading
    fingerprint = request_fingerprint(get_method(cfg.merge.method), cfg.merge, "b", ["f"], {})
    yaml_text = OmegaConf.to_yaml(subset, resolve=True)
    json_text = json.dumps(OmegaConf.to_container(subset, resolve=True), sort_keys=True)
    assert (
        config_hash(subset),
        fingerprint,
        hashlib.sha256(yaml_text.encode()).hexdigest()[:16],
        hashlib.sha256(json_text.encode()).hexdigest()[:16],
    ) == SAMPLES[overrides]
