"""A1111's extra-network tags: v1.10.1 `modules/extra_networks.py` and the Lora extension's multiplier rule."""

from __future__ import annotations

import pytest

from inference.extra_networks import ExtraNetworkParams, lora_multipliers, parse_prompt, parse_prompts


def items_by_type(networks) -> dict[str, list[list]]:
    return {name: [params.items for params in params_list] for name, params_list in networks.items()}


def test_a1111_docstring_example() -> None:
    # The example in A1111's ExtraNetwork.activate docstring.
    prompt, networks = parse_prompt(
        "1girl, <hypernet:agm:1.1> <extrasupernet:master:12:13:14> <hypernet:ray>"
    )
    assert prompt == "1girl,   "
    assert networks["hypernet"] == [
        ExtraNetworkParams(items=["agm", "1.1"]),
        ExtraNetworkParams(items=["ray"]),
    ]
    assert items_by_type(networks) == {
        "hypernet": [["agm", "1.1"], ["ray"]],
        "extrasupernet": [["master", "12", "13", "14"]],
    }


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a, <lora:x:1>, b", "a, , b"),
        ("a <lora:x:1> b", "a  b"),
        ("<lora:x:1>a cat", "a cat"),
        ("a cat,<lora:x:1>", "a cat,"),
        ("x <lora:a\nb:1> y", "x  y"),
    ],
)
def test_only_the_tag_is_removed(prompt: str, expected: str) -> None:
    assert parse_prompt(prompt)[0] == expected


def test_lora_weight() -> None:
    prompt, networks = parse_prompt("masterpiece, <lora:name:0.8>")
    assert prompt == "masterpiece, "
    (params,) = networks["lora"]
    assert params.items == ["name", "0.8"]
    assert params.positional == ["name", "0.8"]
    assert params.named == {}


def test_named_arguments() -> None:
    (params,) = parse_prompt("<lora:name:unet=0.5:te=1>")[1]["lora"]
    assert params.items == ["name", "unet=0.5", "te=1"]
    assert params.positional == ["name"]
    assert params.named == {"unet": "0.5", "te": "1"}


def test_positional_text_encoder_and_unet() -> None:
    (params,) = parse_prompt("<lora:name:0.8:0.3>")[1]["lora"]
    assert params.positional == ["name", "0.8", "0.3"]
    assert lora_multipliers(params) == ("name", 0.8, 0.3)


def test_several_tags_and_types_in_order() -> None:
    prompt, networks = parse_prompt("<lora:a:0.5> cat <hypernet:h:1> <lora:b:-1> <lyco:c:1>")
    assert prompt == " cat   "
    assert items_by_type(networks) == {
        "lora": [["a", "0.5"], ["b", "-1"]],
        "hypernet": [["h", "1"]],
        "lyco": [["c", "1"]],
    }


def test_same_lora_twice_is_kept_twice() -> None:
    networks = parse_prompt("<lora:x:1>, <lora:x:0.5>")[1]
    assert items_by_type(networks) == {"lora": [["x", "1"], ["x", "0.5"]]}


def test_spaces_are_kept() -> None:
    (params,) = parse_prompt("<lora:my lora: -0.75>cat")[1]["lora"]
    assert params.items == ["my lora", " -0.75"]
    assert lora_multipliers(params) == ("my lora", -0.75, -0.75)


def test_no_tags() -> None:
    prompt, networks = parse_prompt("a photo of a cat, (detailed:1.2)")
    assert prompt == "a photo of a cat, (detailed:1.2)"
    assert dict(networks) == {}
    assert parse_prompt("") == ("", {})


@pytest.mark.parametrize(
    "prompt",
    ["<lora>", "<lora:>", "<lora:x", "a <lora:x:1 b", "<lo ra:x:1>", "<lo-ra:x:1>", "<:x:1>", "lora:x:1>"],
)
def test_malformed_tags_stay_as_text(prompt: str) -> None:
    text, networks = parse_prompt(prompt)
    assert text == prompt
    assert dict(networks) == {}


def test_type_is_case_sensitive_word() -> None:
    networks = parse_prompt("<LoRA_2:x:1>")[1]
    assert items_by_type(networks) == {"LoRA_2": [["x", "1"]]}
    assert "lora" not in networks


def test_arguments_end_at_the_first_closing_bracket() -> None:
    prompt, networks = parse_prompt("<lora:a<b:1>>")
    assert prompt == ">"
    assert items_by_type(networks) == {"lora": [["a<b", "1"]]}


@pytest.mark.parametrize(
    ("item", "positional", "named"),
    [
        ("a=b", [], {"a": "b"}),
        ("a=b=c", ["a=b=c"], {}),  # two "=": positional, as A1111 splits with maxsplit 2
        ("=1", [], {"": "1"}),
        ("", [""], {}),
        (0.8, [0.8], {}),  # A1111 adds the default multiplier as a float
    ],
)
def test_params_split(item, positional: list, named: dict) -> None:
    params = ExtraNetworkParams(items=[item])
    assert params.positional == positional
    assert params.named == named


def test_params_equality_and_defaults() -> None:
    assert ExtraNetworkParams(items=["x", "1"]) == ExtraNetworkParams(items=["x", "1"])
    assert ExtraNetworkParams(items=["x", "1"]) != ExtraNetworkParams(items=["x", "1.0"])
    empty = ExtraNetworkParams()
    assert (empty.items, empty.positional, empty.named) == ([], [], {})


def test_parse_prompts_returns_first_prompts_networks() -> None:
    prompts, networks = parse_prompts(["a <lora:x:1>", "b <lora:y:0.5>", "c"])
    assert prompts == ["a ", "b ", "c"]
    assert items_by_type(networks) == {"lora": [["x", "1"]]}
    assert parse_prompts([]) == ([], None)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("<lora:name>", ("name", 1.0, 1.0)),
        ("<lora:name:0.8>", ("name", 0.8, 0.8)),
        ("<lora:name:+.5>", ("name", 0.5, 0.5)),
        ("<lora:name:-1.25>", ("name", -1.25, -1.25)),
        ("<lora:name:0.8:0.3>", ("name", 0.8, 0.3)),
        ("<lora:name:unet=0.5:te=1>", ("name", 1.0, 0.5)),
        ("<lora:name:te=0.4>", ("name", 0.4, 0.4)),  # unet follows te, named te included
        ("<lora:name:unet=0.2>", ("name", 1.0, 0.2)),
        ("<lora:name:0.8:te=0.6>", ("name", 0.6, 0.6)),  # named te wins over positional
        ("<lora:name:0.8:0.3:unet=0.1>", ("name", 0.8, 0.1)),
        ("<lora:te=0.5:name>", ("name", 0.5, 0.5)),  # the name is the first positional argument
        ("<lora:name:0.8:0.3:16>", ("name", 0.8, 0.3)),  # DyLoRA dimension: not read
        ("<lora:name:1:dyn=8:other=x>", ("name", 1.0, 1.0)),
    ],
)
def test_lora_multipliers(tag: str, expected: tuple[str, float, float]) -> None:
    (params,) = parse_prompt(tag)[1]["lora"]
    assert lora_multipliers(params) == expected


def test_lora_multipliers_default_multiplier_as_float() -> None:
    assert lora_multipliers(ExtraNetworkParams(items=["name", 0.7])) == ("name", 0.7, 0.7)


@pytest.mark.parametrize("tag", ["<lora:te=1>", "<lora:name:strong>", "<lora:name:1:unet=high>"])
def test_lora_multipliers_errors(tag: str) -> None:
    (params,) = parse_prompt(tag)[1]["lora"]
    with pytest.raises(ValueError):
        lora_multipliers(params)
