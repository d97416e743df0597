"""Aspect-ratio buckets: kohya's lists, bucket choice, no_upscale buckets and the fit onto a bucket."""

from __future__ import annotations

import random

import pytest

from data.buckets import BucketFit, bucket_resize_box, choose_bucket, make_buckets, no_upscale_bucket
from data.errors import DatasetError, LoraSmithError

# kohya's make_bucket_resolutions((512, 512), 256, 1024, 64), worked out by hand: for each width w the
# height is min(1024, (262144 // w) // 64 * 64), kept with its transpose, plus the 512 square.
KOHYA_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
    (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]  # fmt: skip
# make_bucket_resolutions((512, 768)): area 393216, square 576 (√393216 = 627).
KOHYA_512X768 = [
    (256, 1024), (320, 1024), (384, 896), (384, 960), (384, 1024), (448, 832), (512, 704), (512, 768),
    (576, 576), (576, 640), (640, 576), (704, 512), (768, 512), (832, 448), (896, 384), (960, 384),
    (1024, 256), (1024, 320), (1024, 384),
]  # fmt: skip


def test_default_buckets_are_kohyas() -> None:
    assert make_buckets() == KOHYA_512
    assert make_buckets((512, 512), 256, 1024, 64) == KOHYA_512


def test_non_square_resolution_buckets_are_kohyas() -> None:
    assert make_buckets((512, 768)) == KOHYA_512X768


@pytest.mark.parametrize(
    ("max_reso", "min_size", "max_size", "step", "count"),
    [((768, 768), 320, 1536, 64, 27), ((1024, 1024), 256, 2048, 64, 41), ((512, 512), 256, 1024, 32, 33)],
)
def test_bucket_invariants(max_reso: tuple, min_size: int, max_size: int, step: int, count: int) -> None:
    buckets = make_buckets(max_reso, min_size, max_size, step)
    assert len(buckets) == count
    assert buckets == sorted(set(buckets))
    for width, height in buckets:
        assert width % step == 0 and height % step == 0
        assert min_size <= width <= max_size and min_size <= height <= max_size
        assert width * height <= max_reso[0] * max_reso[1]
        assert (height, width) in buckets


def test_small_step_buckets_are_kohyas() -> None:
    # Several widths share a height once the step is small: 928..1024 all get 256.
    portrait = [
        (256, 928), (256, 960), (256, 992), (256, 1024), (288, 832), (288, 864), (288, 896), (320, 768),
        (320, 800), (352, 704), (352, 736), (384, 640), (384, 672), (416, 608), (448, 576), (480, 544),
    ]  # fmt: skip
    landscape = sorted((h, w) for w, h in portrait)
    assert make_buckets((512, 512), 256, 1024, 32) == portrait + [(512, 512)] + landscape


@pytest.mark.parametrize(
    ("settings", "hint"),
    [
        (((512, 512), 250, 1024, 64), "min_size 250 is not a positive multiple of step 64: use 192 or 256"),
        (((512, 512), 32, 1024, 64), "min_size 32 is not a positive multiple of step 64: use 64"),
        (((512, 512), 256, 1000, 64), "use 960 or 1024"),
        (((512, 512), 576, 1024, 64), "lower min_size to 512"),
        (((1024, 512), 256, 768, 64), "raise max_size to 1024"),
        (((512, 512), 256, 1024, 0), "step 0"),
    ],
)
def test_bad_bucket_settings_name_the_fix(settings: tuple, hint: str) -> None:
    with pytest.raises(LoraSmithError, match=hint):
        make_buckets(*settings)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((1920, 1080), (640, 384)),
        ((1080, 1920), (384, 640)),
        ((512, 512), (512, 512)),
        ((3000, 3000), (512, 512)),
        ((300, 1000), (256, 832)),  # 0.300: 256/832 = 0.308 beats 256/896 = 0.286
        ((10000, 10), (1024, 256)),
        ((1, 1), (512, 512)),
        ((600, 450), (576, 448)),
    ],
)
def test_choose_bucket_takes_the_nearest_aspect_ratio(size: tuple, bucket: tuple) -> None:
    assert choose_bucket(size, KOHYA_512) == bucket


def test_choose_bucket_prefers_the_exact_size_then_the_first() -> None:
    assert choose_bucket((512, 512), [(256, 256), (512, 512)]) == (512, 512)
    assert choose_bucket((300, 300), [(256, 256), (512, 512)]) == (256, 256)
    with pytest.raises(ValueError):
        choose_bucket((10, 10), [])


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((500, 300), (448, 256)),  # fits the area: only rounded down to the step
        ((512, 512), (512, 512)),
        ((3000, 2000), (576, 384)),
        ((1920, 1080), (640, 384)),  # area-fitted to 683 x 384, then rounded down
        ((2000, 100), (1984, 64)),  # min/max sizes do not apply, as in kohya
        ((100, 100), (64, 64)),
        ((637, 784), (384, 512)),  # equal aspect errors: kohya rounds by the height then
        ((817, 1290), (384, 640)),
    ],
)
def test_no_upscale_buckets_are_kohyas(size: tuple, bucket: tuple) -> None:
    assert no_upscale_bucket(size) == bucket


def test_no_upscale_never_upscales() -> None:
    rng = random.Random(3)
    for _ in range(500):
        size = (rng.randint(64, 6000), rng.randint(64, 6000))
        bucket = no_upscale_bucket(size, (768, 768))
        assert bucket[0] <= size[0] and bucket[1] <= size[1]
        assert bucket[0] % 64 == 0 and bucket[1] % 64 == 0
        assert bucket[0] * bucket[1] <= 768 * 768
        resized = bucket_resize_box(size, bucket).resized
        assert resized[0] <= size[0] and resized[1] <= size[1]


@pytest.mark.parametrize("size", [(50, 50), (5000, 40), (20000, 20)])
def test_no_upscale_rejects_images_under_one_step(size: tuple) -> None:
    with pytest.raises(DatasetError, match="no bucket holds it without upscaling"):
        no_upscale_bucket(size)


@pytest.mark.parametrize(
    ("size", "bucket", "fit"),
    [
        ((1920, 1080), (640, 384), BucketFit((683, 384), (21, 0, 661, 384))),
        ((1000, 1000), (448, 576), BucketFit((576, 576), (64, 0, 512, 576))),
        ((300, 400), (448, 576), BucketFit((448, 597), (0, 10, 448, 586))),
        ((512, 512), (512, 512), BucketFit((512, 512), (0, 0, 512, 512))),
        ((500, 300), (448, 256), BucketFit((448, 269), (0, 6, 448, 262))),
        ((1, 1), (512, 512), BucketFit((512, 512), (0, 0, 512, 512))),
        ((101, 128), (448, 576), BucketFit((455, 576), (3, 0, 451, 576))),  # 454.5 rounds half up
    ],
)
def test_bucket_resize_box_covers_then_crops_the_centre(size: tuple, bucket: tuple, fit: BucketFit) -> None:
    assert bucket_resize_box(size, bucket) == fit


def test_bucket_fit_always_covers_exactly_one_bucket() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        size = (rng.randint(1, 8000), rng.randint(1, 8000))
        bucket = choose_bucket(size, KOHYA_512)
        (res_w, res_h), (left, top, right, bottom) = bucket_resize_box(size, bucket)
        assert (right - left, bottom - top) == bucket
        assert 0 <= left and right <= res_w and 0 <= top and bottom <= res_h
        # One side matches the bucket exactly; only the other is cropped.
        assert res_w == bucket[0] or res_h == bucket[1]
