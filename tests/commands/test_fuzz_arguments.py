"""Property tests of the recipe layer (YAML values and command-line overrides): any value of any type for any
known key gives a recipe whose fields have the declared types, or a one-line error that names the key."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llm2vec_hf.training import parse_recipe
from llm2vec_hf.training.arguments import make_parser

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: Keys of every type the recipe layer declares (ints, floats, bools, strings, choices, lists).
KEYS = ["lora_r", "max_seq_length", "learning_rate", "mlm_probability", "simcse_dropout", "use_cpu", "seed",
        "lr_scheduler_type", "lora_target_modules", "pooling_mode", "max_steps", "warmup_ratio", "bf16",
        "num_hard_negatives", "gradient_accumulation_steps", "peft_model_name_or_path", "mask_token_type"]
plausible = st.one_of(st.integers(1, 64), st.floats(0.01, 0.5), st.booleans(), st.sampled_from(
    ["cosine", "linear", "mean", "eos_token", "blank", "mask", "q_proj", "v_proj"]), st.lists(st.sampled_from(
    ["q_proj", "v_proj", "o_proj"]), min_size=1, max_size=3))
values = plausible | plausible | st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["cosine", "mean", "q_proj", "1e-4", "true", "3", "blank"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=2),
    max_leaves=4,
)


@pytest.fixture(scope="module")
def base_values(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    (root / "data.txt").write_text("a sentence\n")
    return {"stage": "simcse", "model_name_or_path": str(root / "base"), "train_file": str(root / "data.txt"),
            "output_dir": str(root / "run"), "report_to": "none"}


@pytest.fixture(scope="module")
def declared_types():
    parser = make_parser()
    return {action.dest: action for action in parser._actions}


def _check(recipe, key, declared_types) -> None:
    """Each fuzzed field holds a value of its declared type (never the raw YAML list/dict/bool it was given)."""
    action = declared_types[key]
    value = next(getattr(part, key) for part in (recipe.model, recipe.data, recipe.mntp, recipe.contrastive,
                                                 recipe.training) if hasattr(part, key))
    convert = getattr(action, "type", None)
    items = value if isinstance(value, list) and (action.nargs in ("+", "*")) else [value]
    for item in items:
        if item is None:
            continue
        if convert is int:
            assert isinstance(item, int) and not isinstance(item, bool), (key, value)
        elif convert is float:
            assert isinstance(item, float), (key, value)
        elif convert is str:
            assert isinstance(item, str), (key, value)


@FUZZ
@given(key=st.sampled_from(KEYS), value=values, via=st.sampled_from(["yaml", "cli"]))
def test_any_value_for_any_key(tmp_path_factory, base_values, declared_types, key, value, via):
    folder = tmp_path_factory.mktemp("r")
    recipe_path = folder / "recipe.yaml"
    data = dict(base_values)
    overrides = []
    if via == "yaml":
        data[key] = value
    elif isinstance(value, (list, dict)) or value is None:
        return  # the command line carries strings only
    else:
        overrides = [f"--{key}", str(value)]
    recipe_path.write_text(yaml.safe_dump(data))
    try:
        recipe = parse_recipe(str(recipe_path), overrides)
    except (ValueError, TypeError, FileNotFoundError) as error:
        message = str(error)
        assert "\n" not in message and message.strip(), repr(error)
        assert "not supported between" not in message and "object has no attribute" not in message, message
        if via == "yaml":
            assert "command-line" not in message, message
        event("outcome: one-line error")
        return
    event("outcome: recipe")
    _check(recipe, key, declared_types)
