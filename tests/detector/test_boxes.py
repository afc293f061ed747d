import numpy as np
import torch

from detector import boxes as B
from helpers import brute_iou
from helpers import random_boxes as helpers_random_boxes


def random_boxes(n, gen):
    """Torch boxes from a torch generator: ``helpers.random_boxes`` seeded by it."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return torch.from_numpy(helpers_random_boxes(np.random.default_rng(seed), n))


def test_iou_hand_case():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 10.0, 10.0]])
    # overlap 5x10 = 50, union 150 -> 1/3; touching corner -> 0; identical -> 1
    assert torch.allclose(B.box_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]))


def test_iou_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(30, gen), random_boxes(20, gen)
    np.testing.assert_allclose(B.box_iou(a, b).numpy(), brute_iou(a.numpy(), b.numpy()), atol=1e-6)


def test_iou_degenerate_and_empty():
    z = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert B.box_iou(z, z).item() == 0.0
    assert B.box_iou(torch.zeros(0, 4), z).shape == (0, 1)


def test_paired_iou_equals_the_pairwise_matrix_bit_for_bit():
    gen = torch.Generator().manual_seed(1)
    a, b = random_boxes(40, gen), random_boxes(7, gen)
    a[3] = torch.tensor([3.0, 3.0, 3.0, 3.0])  # degenerate: IoU 0
    b[2] = a[5]  # identical: IoU 1
    i, j = torch.meshgrid(torch.arange(40), torch.arange(7), indexing="ij")
    paired = B.paired_box_iou(a[i.flatten()], b[j.flatten()])
    assert torch.equal(paired, B.box_iou(a, b).flatten())
    assert B.paired_box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)


def test_area_and_clip():
    b = torch.tensor([[-5.0, 2.0, 20.0, 8.0], [4.0, 4.0, 2.0, 9.0]])
    assert B.box_area(b).tolist() == [150.0, 0.0]
    c = B.clip_boxes(b, width=10, height=6)
    assert c.tolist() == [[0.0, 2.0, 10.0, 6.0], [4.0, 4.0, 2.0, 6.0]]
    assert B.valid_boxes(c).tolist() == [True, False]
    assert B.valid_boxes(torch.tensor([[0.0, 0.0, 19.0, 30.0]]), min_size=20).tolist() == [False]


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(1)
    p, g = random_boxes(50, gen), random_boxes(50, gen)
    d = B.encode_boxes(p, g)
    torch.testing.assert_close(B.decode_boxes(p, d), g, atol=1e-3, rtol=1e-4)
    # identity: zero deltas
    assert torch.allclose(B.encode_boxes(p, p), torch.zeros_like(p), atol=1e-6)


def test_encode_hand_case():
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    g = torch.tensor([[5.0, 0.0, 25.0, 20.0]])  # centre +10 in x, width x2
    torch.testing.assert_close(B.encode_boxes(p, g), torch.tensor([[1.0, 0.0, float(np.log(2)), 0.0]]))


def test_decode_clamps_huge_deltas():
    p = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = B.decode_boxes(p, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))
    assert torch.isfinite(out).all()


def test_nms_keeps_best_and_suppresses_overlaps():
    b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    s = torch.tensor([0.9, 0.95, 0.5])
    assert B.nms(b, s, 0.3).tolist() == [1, 2]
    assert B.nms(torch.zeros(0, 4), torch.zeros(0), 0.3).numel() == 0
    # per-label: same boxes with different labels both survive
    keep = B.batched_nms(b[:2], s[:2], torch.tensor([0, 1]), 0.3)
    assert sorted(keep.tolist()) == [0, 1]


def test_batched_nms_caps_each_label():
    # Disjoint boxes (nothing suppressed), labels 0 1 0 1 0, scores decreasing.
    b = torch.tensor([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(5)])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([0, 1, 0, 1, 0])
    assert B.batched_nms(b, s, labels, 0.3, max_per_label=2).tolist() == [0, 1, 2, 3]
    assert B.batched_nms(b, s, labels, 0.3, max_per_label=1).tolist() == [0, 1]
    assert B.batched_nms(b, s, labels, 0.3).tolist() == [0, 1, 2, 3, 4]
    assert B.rank_within_label(torch.tensor([3, 1, 3, 3, 1])).tolist() == [0, 0, 1, 2, 1]
    assert B.rank_within_label(torch.zeros(0, dtype=torch.int64)).tolist() == []


def test_xywh_round_trip():
    b = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    assert B.xywh_to_xyxy(b).tolist() == [[1.0, 2.0, 5.0, 10.0]]
    assert torch.equal(B.xyxy_to_xywh(B.xywh_to_xyxy(b)), b)


def test_as_box_tensor():
    t = B.as_box_tensor(np.array([[1, 2, 3, 4]], dtype=np.int64))
    assert t.dtype == torch.float32 and t.shape == (1, 4)
    assert B.as_box_tensor([]).shape == (0, 4)


def test_flip_boxes_mirrors_and_round_trips():
    boxes = torch.tensor([[0.0, 5.0, 10.0, 20.0], [90.0, 0.0, 100.0, 7.0]])
    flipped = B.flip_boxes(boxes, 100)
    assert flipped.tolist() == [[90.0, 5.0, 100.0, 20.0], [0.0, 0.0, 10.0, 7.0]]
    torch.testing.assert_close(B.flip_boxes(flipped, 100), boxes)
    assert B.flip_boxes(torch.zeros(0, 4), 100).shape == (0, 4)
