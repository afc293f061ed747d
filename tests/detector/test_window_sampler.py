"""detector/training/window_sampler.py, prefetch.py and stream_finetune.py: image-centric mini-batches,
streamed from a pool function a bounded number of batches ahead (issue 29)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from detector.training.fc_finetune import WindowLabels
from detector.training.prefetch import prefetched
from detector.training.stream_finetune import streamed_batches
from detector.training.window_sampler import ImageCentricSampler, shares


def fake_labels(num_images: int, seed: int = 0) -> list[WindowLabels]:
    """Images with 1-12 positives of classes 1-3 and 5-60 background windows; every 7th has
    no positive, every 5th no background."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(num_images):
        n_fg = 0 if i % 7 == 6 else int(rng.integers(1, 13))
        n_bg = 0 if i % 5 == 4 else int(rng.integers(5, 61))
        order = rng.permutation(n_fg + n_bg + 5)  # window indices, some left unlabelled
        labels.append(WindowLabels(np.sort(order[:n_fg]), rng.integers(1, 4, n_fg),
                                   np.sort(order[n_fg:n_fg + n_bg])))
    return labels


def sampler(labels, seed=0, batch_size=128, images_per_batch=2):
    return ImageCentricSampler(labels, batch_size, 0.25, images_per_batch, np.random.default_rng(seed))


def test_every_window_of_every_image_is_drawn_over_many_batches():
    labels = fake_labels(12)
    s = sampler(labels)
    seen = [set() for _ in labels]
    for _ in range(3000):
        draw = s.draw()
        for i, windows in zip(draw.images, draw.windows):
            seen[i].update(windows.tolist())
    for i, lab in enumerate(labels):  # those without positives or without background too
        assert seen[i] == set(lab.fg_index.tolist()) | set(lab.bg_index.tolist()), i
    use = s.use()
    assert use.distinct_windows == use.eligible_windows == sum(len(lab.fg_index) + len(lab.bg_index)
                                                               for lab in labels)
    assert use.images == use.eligible_images == len(labels)


def test_each_batch_holds_a_quarter_positives_with_their_own_labels():
    labels = fake_labels(12)
    s = sampler(labels)
    for _ in range(200):
        draw = s.draw()
        assert len(draw.labels) == 128 and (draw.labels > 0).sum() == 32
        assert len(draw.images) == 2 and len(set(draw.images.tolist())) == 2
        at = 0
        for i, windows in zip(draw.images, draw.windows):
            lab = labels[i]
            fg_label = dict(zip(lab.fg_index.tolist(), lab.fg_labels.tolist()))
            for w, y in zip(windows.tolist(), draw.labels[at:at + len(windows)].tolist()):
                assert fg_label[w] == y if y else w in set(lab.bg_index.tolist())
            at += len(windows)


def test_the_seed_reproduces_the_draws():
    labels = fake_labels(30)

    def draws(seed):
        s = sampler(labels, seed)
        return [(d.images.tolist(), [w.tolist() for w in d.windows]) for d in (s.draw() for _ in range(20))]
    assert draws(0) == draws(0)
    assert draws(0) != draws(1)


def test_shares_split_a_batch_evenly():
    assert shares(32, 2).tolist() == [16, 16] and shares(96, 5).tolist() == [20, 19, 19, 19, 19]


def test_batches_need_both_kinds_of_window():
    only_bg = WindowLabels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.arange(5))
    only_fg = WindowLabels(np.arange(3), np.ones(3, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="positive and background windows"):
        sampler([only_bg, only_bg])
    with pytest.raises(ValueError, match="positive and background windows"):
        sampler([only_bg, only_fg], images_per_batch=1)
    draw = sampler([only_bg, only_fg, only_bg]).draw()  # the fg image is always drawn, with a bg one
    assert sorted(len(w) for w in draw.windows) == [32, 96] and (draw.labels > 0).sum() == 32


def held_rows(num_images: int, depth: int, steps: int = 40, batch_size: int = 32) -> tuple[int, int]:
    """The most pooled rows in existence at once (pooled but not yet trained on, plus the
    batch in training), streaming ``steps`` batches from ``num_images`` fake images, and
    the rows pooled in all."""
    s = sampler(fake_labels(num_images), batch_size=batch_size)
    pooled = {"rows": 0}
    lock = threading.Lock()

    def pool(image: int, windows: np.ndarray) -> torch.Tensor:
        with lock:
            pooled["rows"] += len(windows)
        return torch.zeros(len(windows), 4)

    most, trained = 0, 0
    for x, _ in prefetched(streamed_batches(s, pool, steps), depth):
        time.sleep(0.005)  # let the producer run as far ahead as it may
        with lock:
            most = max(most, pooled["rows"] - trained)
        trained += len(x)
    return most, pooled["rows"]


def test_pooled_rows_held_do_not_grow_with_the_number_of_images():
    depth, batch = 2, 32
    few, few_total = held_rows(10, depth, batch_size=batch)
    many, many_total = held_rows(1000, depth, batch_size=batch)
    assert few_total == many_total == 40 * batch  # a batch pooled per step, nothing ahead of it
    # The queue's batches, the one being pooled and the one training: whatever the images.
    bound = batch * (depth + 2)
    assert few <= bound and many <= bound
    assert few > batch and many > batch  # the producer did run ahead


def test_prefetch_keeps_order_and_hands_over_the_producers_error():
    assert list(prefetched(iter(range(50)), 3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("cache entry unreadable")
    got = []
    with pytest.raises(OSError, match="unreadable"):
        for item in prefetched(failing(), 2):
            got.append(item)
    assert got == [1]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i
    stream = prefetched(items(), 2)
    assert next(stream) == 0
    stream.close()
    before = len(produced)
    time.sleep(0.3)
    assert len(produced) == before and before <= 5
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


# -- the official data rules on the streamed sampler (issue 24's rules, issue 29's stream) ------

def drawn_images(ctx, batches: int = 200) -> set[str]:
    """The records (image ids) ``batches`` draws of the context's streamed sampler took."""
    from detector.training.context import streamed_windows
    sampler, _ = streamed_windows(ctx, ctx.test_config.finetune)
    return {ctx.records[i].image_id for _ in range(batches) for i in sampler.draw().images}


def test_the_stream_draws_mirrors_only_when_fine_tuning_is_in_flip_stages(tmp_path):
    from helpers import rules_context
    everywhere = rules_context(tmp_path / "a")
    assert drawn_images(everywhere) == {r.image_id for r in everywhere.records}  # 3 images, 3 mirrors
    ctx = rules_context(tmp_path / "b", "data.flip_stages=[svm,bbox]")
    assert len(ctx.records) == 6  # the mirrors exist (for the SVMs and regression), unlabelled here
    assert drawn_images(ctx) == {r.image_id for r in ctx.verified.records}


def test_the_stream_labels_difficult_objects_by_difficult_stages(tmp_path):
    from detector.training.context import streamed_windows
    from helpers import rules_context
    default = rules_context(tmp_path, "data.flip=false")
    official = rules_context(tmp_path, "data.flip=false", "data.difficult_stages=[finetune]")
    first = default.records[0]
    assert first.difficult.sum() == 2 and len(first.boxes) == 4
    positives = {}
    for name, ctx, keep in (("default", default, ~first.difficult), ("official", official, slice(None))):
        sampler, pool = streamed_windows(ctx, ctx.test_config.finetune)
        labels, gt = sampler.labels[0], first.boxes[keep]
        n = len(gt)
        # The windows start with the ground truth the rule learns from, each its own class's positive...
        np.testing.assert_array_equal(labels.fg_index[:n], np.arange(n))
        np.testing.assert_array_equal(labels.fg_labels[:n], first.labels[keep] + 1)
        # ...and a draw's indices pool those windows.
        np.testing.assert_array_equal(pool(0, np.arange(n)).numpy(), ctx.pool5(first, gt).numpy())
        positives[name] = len(labels.fg_index)
    assert positives["official"] > positives["default"]  # windows on the difficult objects join
