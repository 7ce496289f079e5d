"""One entry per method: its options, builder and needs; the config section takes a method's
own options only."""

from dataclasses import fields

import pytest

from fastunlearn.engine import ConfigError, UnlearnConfig
from fastunlearn.engine.config import OPTION_NAMES, ObjectiveConfig
from fastunlearn.objectives import METHODS, WeightedSum


def test_the_config_section_holds_every_methods_options_and_nothing_else():
    section = {item.name for item in fields(ObjectiveConfig)}
    assert set(OPTION_NAMES) <= section
    assert section - set(OPTION_NAMES) == {"name", "retain", "retain_weight", "backend"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_builds_its_terms_from_its_defaults(name):
    method = METHODS[name]
    terms = method.build(method.options(), object() if method.needs_reference else None, None)
    assert terms and all(term.part in ("forget", "retain", "mismatch") for term in terms)
    parts = {term.part for term in terms}
    assert ("retain" in parts) == method.retain_data
    assert ("mismatch" in parts) == method.mismatch_data
    assert isinstance(WeightedSum(terms), WeightedSum)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.name=ga", "objective.temperature=0.5"], "temperature is an option of wpn"),
        (["objective.name=wpn", "objective.beta=0.2"], "beta is an option of npo, not of 'wpn'"),
        (["objective.name=npo", "objective.kl_weight=2"], "kl_weight is an option of ga_mismatch"),
        (["objective.name=npo", "objective.beta=0"], "objective: beta must be positive"),
        (["objective.opening_tokens=-1"], "opening_tokens must be >= 0"),
        (["objective.opening_weight=0"], "opening_weight positive"),
        (["objective.negative_unlikelihood_weight=1"], "set opening_tokens too"),
    ],
)
def test_options_of_another_method_or_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnConfig.load(None, overrides)


def test_unset_options_take_the_methods_defaults():
    config = UnlearnConfig.load(None, ["objective.name=npo"])
    assert config.objective.options == METHODS["npo"].options()
    config = UnlearnConfig.load(None, ["objective.name=wpn", "objective.temperature=0.5"])
    assert config.objective.options.temperature == 0.5
    assert config.objective.options.similarity == METHODS["wpn"].options().similarity
