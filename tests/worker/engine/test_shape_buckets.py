"""The shapes the compiled engine compiles for: the page's sizes plus the engine's own two, and a
few row counts that every pass is padded up to (no torch, no engine)."""

from __future__ import annotations

from shared.size_presets import SIZE_PRESETS
from worker.engine.shape_buckets import ShapeBuckets, row_counts


def test_sdxl_compiles_the_offered_sizes_its_default_and_its_face_detail_size():
    buckets = ShapeBuckets.for_engine(working=1024, default=(832, 1216), max_images=8)
    assert buckets.sizes == (*SIZE_PRESETS, (1024, 1024))   # 832x1216 is a preset and the default
    assert buckets.rows == (2, 4, 8)       # 8 images under guidance are 16 rows: two calls of 8
    assert buckets.latent_sizes(8) == {(32, 32), (64, 64), (152, 104), (128, 128)}


def test_the_tiny_profile_compiles_the_small_sizes_the_page_offers_it():
    buckets = ShapeBuckets.for_engine(working=128, default=(104, 152), max_images=4)
    assert buckets.sizes == ((256, 256), (512, 512), (104, 152), (128, 128))
    assert buckets.has_size(104, 152) and not buckets.has_size(152, 104)
    assert buckets.rows == (2, 4, 8)


def test_given_sizes_replace_the_offered_ones():
    buckets = ShapeBuckets.for_engine(working=128, default=(104, 152), max_images=2, sizes=((64, 64),))
    assert buckets.sizes == ((64, 64),) and buckets.rows == (2, 4)


def test_no_bucket_holds_more_than_eight_rows():
    # a graph traced at 2 rows holds up to 15 on the CPU (the convolution's backend choice)
    assert ShapeBuckets.for_engine(working=1024, default=(832, 1216), max_images=32).rows == (2, 4, 8)


def test_a_pass_is_padded_to_the_next_row_count_and_none_above_the_largest():
    buckets = ShapeBuckets(sizes=((64, 64),), rows=row_counts(16))
    assert [buckets.rows_for(n) for n in (1, 2, 3, 4, 5, 9, 16)] == [2, 2, 4, 4, 8, 16, 16]
    assert buckets.rows_for(17) is None
    assert row_counts(1) == (2,) and row_counts(2) == (2,) and row_counts(3) == (2, 4)
