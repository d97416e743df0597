"""kohya's sample prompt files: every option of a line, the .toml / .json forms, and one-line errors."""

from __future__ import annotations

import json

import pytest

from inference.prompt_file import (
    PromptFileError,
    SamplePrompt,
    parse_line,
    read_prompt_file,
    sampler_name,
    with_defaults,
)
from inference.sampler_names import find_sampler


def test_every_option_of_a_line():
    line = "1girl, (red hair:1.2) --n lowres, bad hands --w 512 --h 768 --d 42 --l 6.5 --s 28 --ss euler_a --am 0.7"
    assert parse_line(line, "p.txt:1") == SamplePrompt(
        "1girl, (red hair:1.2)", "lowres, bad hands", 512, 768, 42, 6.5, 28, "Euler a", 0.7
    )


def test_kohya_rounding_clamping_case_and_the_sampler_alias():
    prompt = parse_line("cat --W 100 --H 70 --S 5000 --sampler k_dpm_2 --D 0", "x")
    assert (prompt.width, prompt.height, prompt.steps, prompt.sampler, prompt.seed) == (
        96,
        64,
        1000,
        "DPM2",
        0,
    )
    assert parse_line("cat --s 0", "x").steps == 1
    assert parse_line("cat", "x") == SamplePrompt("cat")


@pytest.mark.parametrize(
    "kohya, a1111",
    [("euler_a", "Euler a"), ("k_euler", "Euler"), ("ddim", "DDIM"), ("pndm", "PLMS"), ("lms", "LMS"),
     ("k_lms", "LMS"), ("heun", "Heun"), ("dpm_2_a", "DPM2 a"), ("k_dpm_2_a", "DPM2 a"),
     ("dpmsolver++", "DPM++ 2M"), ("DPM++ 2M", "DPM++ 2M"), ("Euler a", "Euler a")],
)  # fmt: skip
def test_kohya_and_a1111_sampler_names(kohya, a1111):
    assert sampler_name(kohya) == a1111
    assert find_sampler(kohya).name == a1111  # the engine (and eval.sampler) read them too


@pytest.mark.parametrize(
    "line, message",
    [
        ("cat --q 3", "p.txt:4: unknown option --q"),
        ("cat --g 3.5", "p.txt:4: --g (FLUX's embedded guidance) does not apply"),
        ("cat --cn pose.png", "p.txt:4: --cn (a ControlNet image) does not apply"),
        ("cat --w big", "p.txt:4: --w big: expected a whole number"),
        ("cat --w 4", "p.txt:4: --w 4: 4 is below 8 pixels"),
        ("cat --l nan", "p.txt:4: --l nan: nan is not a finite number"),
        ("cat --d -5", "p.txt:4: --d -5: a seed is -1 (random) or at least 0"),
        (
            "cat --ss dpmsolver",
            "p.txt:4: --ss dpmsolver: kohya's dpmsolver: DPM-Solver (not ++) has no A1111",
        ),
        ("cat --ss warp", "p.txt:4: --ss warp: 'warp' is not a known sampler"),
        ("cat --am 1,0.5", "p.txt:4: --am 1,0.5: one weight"),
        ("cat --n", "p.txt:4: --n needs a value"),
        (" --w 64", "p.txt:4: the line has options but no prompt"),
    ],
)
def test_a_bad_option_names_file_line_and_option(line, message):
    with pytest.raises(PromptFileError) as caught:
        parse_line(line, "p.txt:4")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_txt_skips_comments_and_blank_lines_and_counts_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# sample prompts\n\ncat --d 1\n  \ndog --n cat --w 64\n# cow\nbird --x 1\n")
    with pytest.raises(PromptFileError, match=r"prompts\.txt:7: unknown option --x"):
        read_prompt_file(path)
    path.write_text("# sample prompts\n\ncat --d 1\n  \ndog --n cat --w 64\n")
    assert read_prompt_file(path) == [SamplePrompt("cat", seed=1), SamplePrompt("dog", "cat", width=64)]


def test_toml_shares_the_prompt_table_with_each_subset(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text(
        '[prompt]\nnegative_prompt = "lowres"\nwidth = 64\nheight = 64\nscale = 5.0\nsample_steps = 4\n'
        '[[prompt.subset]]\nprompt = "cat"\nseed = 1\n'
        '[[prompt.subset]]\nprompt = "dog"\nwidth = 32\nsample_sampler = "k_euler_a"\nnetwork_multiplier = 0.5\n'
    )
    assert read_prompt_file(path) == [
        SamplePrompt("cat", "lowres", 64, 64, 1, 5.0, 4),
        SamplePrompt("dog", "lowres", 32, 64, None, 5.0, 4, "Euler a", 0.5),
    ]
    path.write_text('[prompt]\n[[prompt.subset]]\nprompt = "cat"\nguidance_scale = 3.5\n')
    with pytest.raises(PromptFileError, match="entry 1: key 'guidance_scale' does not apply"):
        read_prompt_file(path)


def test_json_takes_lines_and_dicts(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(["cat --d 3", {"prompt": "dog", "seed": 4, "scale": 6}]))
    assert read_prompt_file(path) == [SamplePrompt("cat", seed=3), SamplePrompt("dog", seed=4, cfg_scale=6.0)]
    path.write_text(json.dumps([{"prompt": "dog", "colour": "red"}]))
    with pytest.raises(PromptFileError, match="entry 1: unknown key 'colour'"):
        read_prompt_file(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing.txt", None, "cannot read the prompt file"),
        ("empty.txt", "# nothing\n\n", "holds no prompt"),
        ("bad.json", "[1, 2", "bad.json: Expecting"),
        ("flat.toml", 'prompt = "cat"\n', "needs [prompt] and [[prompt.subset]]"),
    ],
)
def test_unreadable_files_give_one_line(tmp_path, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(PromptFileError, match=message.replace("[", r"\[")):
        read_prompt_file(tmp_path / name)


def test_unset_values_come_from_the_defaults():
    defaults = SamplePrompt("", "bad", 64, 64, -1, 7.5, 30, "DDIM", 1.0)
    got = with_defaults(SamplePrompt("cat", width=32, seed=3), defaults)
    assert got == SamplePrompt("cat", "bad", 32, 64, 3, 7.5, 30, "DDIM", 1.0)
