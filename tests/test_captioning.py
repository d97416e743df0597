"""Captioners on tiny models built here: BLIP and GIT saved with save_pretrained, WD14 as a small ONNX graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPImageProcessorPil,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
)

from captioning import CaptionerError, caption_all, make_captioner
from captioning.blip import BlipCaptioner, strip_prompt
from captioning.git import GitCaptioner
from captioning.tiny_tagger import write_tiny_tagger
from captioning.wd14 import WD14Tagger, preprocess

# ---------------------------------------------------------------- BLIP and GIT: tiny random models

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
VOCAB += "a picture of dog cat man red blue on the grass with hammer metal".split()
PAD, CLS, SEP, DEC = 0, 2, 3, 5
# Wide initial weights (0.5, not 0.02) so these random models' captions depend on the picture.
INIT = 0.5
TINY_VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
    initializer_range=INIT,
)
TINY_TEXT = dict(
    vocab_size=len(VOCAB),
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=64,
    initializer_range=INIT,
)


def _tokenizer(folder, **special) -> BertTokenizer:
    """A WordPiece tokenizer over VOCAB, written as a BERT vocab.txt and read back."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(folder / "vocab.txt"), **special)


def _words_only(linear: torch.nn.Linear) -> None:
    """Random weights often end a caption at once; forbid special tokens so every caption has words."""
    with torch.no_grad():
        linear.bias[: DEC + 1] = -1e4


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip")
    text = TINY_TEXT | dict(bos_token_id=DEC, sep_token_id=SEP, eos_token_id=SEP, pad_token_id=PAD)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)
    )
    _words_only(model.text_decoder.cls.predictions.decoder)
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor, _tokenizer(folder / "vocab", bos_token="[DEC]"))
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("git")
    config = GitConfig(
        vision_config=TINY_VISION, bos_token_id=CLS, eos_token_id=SEP, pad_token_id=PAD, **TINY_TEXT
    )
    torch.manual_seed(1)
    model = GitForCausalLM(config)
    _words_only(model.output)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = GitProcessor(image_processor, _tokenizer(folder / "vocab"))
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8)) for i in range(3)]


def test_strip_prompt_cuts_only_a_leading_prompt():
    assert strip_prompt("a picture of a man with a hammer", "a picture of ") == "a man with a hammer"
    assert strip_prompt("A picture of a dog", "a picture of ") == "a dog"
    assert strip_prompt("a dog on grass", "a picture of ") == "a dog on grass"
    assert strip_prompt("a dog", "") == "a dog"


def test_blip_captions_come_from_the_folder_model(blip_dir):
    captioner = BlipCaptioner(blip_dir, max_length=12, min_length=5, prefix="sks man, ")
    pictures = _pictures()
    captions = caption_all(captioner, pictures, batch_size=2)
    assert len(captions) == 3
    assert all(c.startswith("sks man, ") and len(c) > len("sks man, ") for c in captions)
    assert len(set(captions)) == 3  # each picture its own caption, so order mix-ups show
    assert not any("picture of" in c for c in captions)  # the decoding prompt is cut off
    assert caption_all(captioner, pictures, batch_size=2) == captions  # deterministic
    assert caption_all(captioner, pictures, batch_size=3) == captions  # batching changes nothing

    # The same weights and processor used by hand, decoding from BLIP's prompt, give the same words.
    model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
    processor = BlipProcessor.from_pretrained(blip_dir)
    inputs = processor(images=pictures, text=["a picture of "] * 3, return_tensors="pt")
    ids = model.generate(**inputs, max_length=12, min_length=5, num_beams=1, do_sample=False)
    expected = [
        t.removeprefix("a picture of").strip() for t in processor.batch_decode(ids, skip_special_tokens=True)
    ]
    assert [c.removeprefix("sks man, ") for c in captions] == expected


def test_blip_sampling_is_seeded_and_leaves_global_rng_alone(blip_dir):
    captioner = BlipCaptioner(blip_dir, max_length=12, sample=True, seed=3)
    pictures = _pictures()
    state = torch.get_rng_state()
    first = captioner.caption(pictures)
    assert torch.equal(torch.get_rng_state(), state)
    assert captioner.caption(pictures) == first


def test_git_captions_come_from_the_folder_model(git_dir):
    captioner = make_captioner("git", model=git_dir, max_length=10, prefix="chk style, ", batch_size=2)
    assert isinstance(captioner, GitCaptioner)
    pictures = _pictures()
    captions = caption_all(captioner, pictures)
    assert len(captions) == 3
    assert all(c.startswith("chk style, ") and len(c) > len("chk style, ") for c in captions)
    assert len(set(captions)) == 3
    assert caption_all(captioner, pictures) == captions

    model = GitForCausalLM.from_pretrained(git_dir).eval()
    processor = GitProcessor.from_pretrained(git_dir)
    ids = model.generate(
        pixel_values=processor(images=pictures, return_tensors="pt").pixel_values, max_length=10
    )
    expected = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert [c.removeprefix("chk style, ") for c in captions] == expected


@pytest.mark.parametrize("captioner", [BlipCaptioner, GitCaptioner])
def test_transformers_captioners_name_a_bad_folder(captioner, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptionerError, match="empty"):
        captioner(tmp_path / "empty")
    with pytest.raises(CaptionerError, match="does not exist"):
        captioner(tmp_path / "missing" / "model")


# ---------------------------------------------------------------- WD14: a small ONNX graph

SIDE = 32
RATINGS = [("general", 0.2), ("sensitive", 0.7), ("questionable", 0.1), ("explicit", 0.05)]
GENERALS = [
    ("1girl", 0.9),
    ("long_hair", 0.5),
    ("at_general_threshold", 0.35),
    ("below_general", 0.34),
    ("^_^", 0.6),
    ("red_theme", 0.0),
    ("blue_theme", 0.0),
]
CHARACTERS = [("weak_character", 0.5), ("exact_character", 0.85), ("hero_(series)", 0.9)]
TAGS = [(n, s, 9) for n, s in RATINGS] + [(n, s, 0) for n, s in GENERALS] + [(n, s, 4) for n, s in CHARACTERS]
DEFAULT_TAGS = "1girl, long hair, at general threshold, ^_^, exact character, hero (series)"


def _colour_weights() -> np.ndarray:
    """(3, T): per-channel means (0-255) → score; red_theme reads channel 2 minus channel 0, blue_theme the reverse.

    With BGR input a red picture scores red_theme 1.0; RGB order or 0-1 scaling would not.
    """
    weights = np.zeros((3, len(TAGS)), dtype=np.float32)
    names = [name for name, _, _ in TAGS]
    weights[:, names.index("red_theme")] = [-1 / 255, 0, 1 / 255]
    weights[:, names.index("blue_theme")] = [1 / 255, 0, -1 / 255]
    return weights


def _write_tagger(folder, input_shape=("batch", SIDE, SIDE, 3), csv_rows=TAGS):
    """model.onnx (scores = constants + channel means @ weights) and its selected_tags.csv."""
    folder = write_tiny_tagger(folder, TAGS, _colour_weights(), input_shape)
    if csv_rows is not TAGS:
        lines = ["tag_id,name,category,count"] + [
            f"{i},{n},{c},{100 - i}" for i, (n, _, c) in enumerate(csv_rows)
        ]
        (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return _write_tagger(tmp_path_factory.mktemp("wd14") / "tagger")


def _square(colour) -> Image.Image:
    return Image.new("RGB", (SIDE, SIDE), colour)


BLACK = _square((0, 0, 0))  # every channel mean 0: the scores are exactly the constants


def test_wd14_thresholds_are_inclusive_per_category_in_model_order(tagger_dir):
    tagger = WD14Tagger(tagger_dir)
    # general 0.35: long_hair 0.5 in, a score of exactly 0.35 in, 0.34 out; character 0.85: 0.5 out,
    # exactly 0.85 in, 0.9 in. Generals before characters, as the csv lists them.
    assert tagger.caption([BLACK]) == [DEFAULT_TAGS]
    stricter = WD14Tagger(tagger_dir, general_threshold=0.5, character_threshold=0.5)
    assert stricter.caption([BLACK]) == [
        "1girl, long hair, ^_^, weak character, exact character, hero (series)"
    ]
    off = WD14Tagger(tagger_dir, character_threshold=1.01)
    assert off.caption([BLACK]) == ["1girl, long hair, at general threshold, ^_^"]


def test_wd14_ratings_underscores_exclusions_and_order_options(tagger_dir):
    assert WD14Tagger(tagger_dir, include_ratings=True).caption([BLACK]) == ["sensitive, " + DEFAULT_TAGS]
    raw = WD14Tagger(tagger_dir, underscores_to_spaces=False).caption([BLACK])
    assert raw == ["1girl, long_hair, at_general_threshold, ^_^, exact_character, hero_(series)"]
    excluded = WD14Tagger(tagger_dir, exclude_tags=["long hair", "Hero_(series)", "^_^"]).caption([BLACK])
    assert excluded == ["1girl, at general threshold, exact character"]
    first = WD14Tagger(tagger_dir, character_tags_first=True).caption([BLACK])
    assert first == ["exact character, hero (series), 1girl, long hair, at general threshold, ^_^"]


def test_wd14_model_sees_bgr_in_0_255(tagger_dir):
    tagger = WD14Tagger(tagger_dir)
    red, blue = tagger.caption([_square((255, 0, 0)), _square((0, 0, 255))])
    assert red == DEFAULT_TAGS.replace("^_^", "^_^, red theme")
    assert blue == DEFAULT_TAGS.replace("^_^", "^_^, blue theme")


def test_preprocess_composites_on_white_pads_centred_and_outputs_bgr_floats():
    pixels = [(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128), (0, 255, 0, 255)]  # 4 wide, 1 high
    image = Image.new("RGBA", (4, 1))
    image.putdata(pixels)
    array = preprocess(image, (4, 4))
    assert array.dtype == np.float32 and array.shape == (4, 4, 3)
    # 3 rows of padding: 1 above, 2 below (the picture is centred, the odd row goes below), all white.
    assert (array[[0, 2, 3]] == 255).all()
    expected_row = [[0, 0, 255], [255, 255, 255], [127, 127, 127], [0, 255, 0]]  # BGR; alpha on white
    np.testing.assert_array_equal(array[1], np.array(expected_row, dtype=np.float32))

    tall = preprocess(Image.new("RGB", (1, 3), (10, 20, 30)), (3, 3))
    assert (tall[:, [0, 2]] == 255).all() and (tall[:, 1] == [30, 20, 10]).all()
    resized = preprocess(Image.new("RGB", (8, 8), (10, 20, 30)), (4, 4))
    assert resized.shape == (4, 4, 3) and np.allclose(resized, [30, 20, 10], atol=1)


def test_wd14_hands_the_session_an_nhwc_batch_of_preprocessed_pictures(tagger_dir):
    tagger = WD14Tagger(tagger_dir)
    fed = []
    session_run = tagger.session.run
    tagger.session.run = lambda outputs, feed: fed.append(feed) or session_run(outputs, feed)
    pictures = [Image.new("RGBA", (20, 10), (255, 0, 0, 100)), BLACK]
    tagger.caption(pictures)
    (feed,) = fed
    batch = feed["input_1:0"]
    assert batch.dtype == np.float32 and batch.shape == (2, SIDE, SIDE, 3)
    np.testing.assert_array_equal(batch, np.stack([preprocess(p, (SIDE, SIDE)) for p in pictures]))


def test_wd14_runs_fixed_batch_models_in_chunks_and_reads_files(tmp_path, tagger_dir):
    fixed = WD14Tagger(_write_tagger(tmp_path / "fixed", input_shape=(1, SIDE, SIDE, 3)), batch_size=3)
    pictures = [BLACK, _square((255, 0, 0)), _square((0, 0, 255))]
    expected = WD14Tagger(tagger_dir).caption(pictures)
    assert caption_all(fixed, pictures) == expected
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(tmp_path / f"{i}.png")
        picture.save(paths[-1])
    assert caption_all(make_captioner("wd14", model=tagger_dir, batch_size=2), paths) == expected


def test_wd14_errors_name_the_file_and_the_fix(tmp_path, tagger_dir, monkeypatch):
    with pytest.raises(CaptionerError, match="does not exist"):
        WD14Tagger(tmp_path / "nowhere" / "tagger")
    no_csv = _write_tagger(tmp_path / "no_csv")
    (no_csv / "selected_tags.csv").unlink()
    with pytest.raises(CaptionerError, match=r"no_csv/selected_tags\.csv not found"):
        WD14Tagger(no_csv)
    with pytest.raises(CaptionerError, match=r"NHWC"):
        WD14Tagger(_write_tagger(tmp_path / "nchw", input_shape=("batch", 3, SIDE, SIDE)))
    with pytest.raises(CaptionerError, match="different models"):
        WD14Tagger(_write_tagger(tmp_path / "short_csv", csv_rows=TAGS[:-1]))
    bad = _write_tagger(tmp_path / "bad_csv")
    (bad / "selected_tags.csv").write_text("id,tag\n0,1girl\n", encoding="utf-8")
    with pytest.raises(CaptionerError, match="bad_csv"):
        WD14Tagger(bad)

    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(CaptionerError, match="nobody/missing-tagger"):
        WD14Tagger("nobody/missing-tagger")


def test_make_captioner_rejects_unknown_names_and_options(tagger_dir):
    with pytest.raises(CaptionerError, match="blip, git, wd14"):
        make_captioner("deepbooru")
    with pytest.raises(CaptionerError, match="threshold"):
        make_captioner("wd14", model=tagger_dir, threshold=0.5)
    tagger = make_captioner("wd14", model=tagger_dir, general_threshold=0.5)
    assert isinstance(tagger, WD14Tagger) and tagger.general_threshold == 0.5
