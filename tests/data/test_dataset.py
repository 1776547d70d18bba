"""The batch plan: deterministic, modality-grouped, independent of the number of processes."""

from __future__ import annotations

from vistune.data.dataset import GlobalBatchPlan, split_global_batch


def _plan(**kw):
    lengths = [10 + (i * 7) % 23 for i in range(23)]
    has_image = [i % 3 != 0 for i in range(23)]
    return GlobalBatchPlan(lengths, has_image, 4, seed=0, **kw), has_image


def test_batches_cover_each_record_once_and_group_modalities():
    plan, has_image = _plan()
    batches = plan.epoch_batches(0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(23))
    full = [b for b in batches if len(b) == 4]
    assert all(len({has_image[i] for i in b}) == 1 for b in full)  # no mixed full batch
    assert all(len(b) == 4 for b in batches[: len(full)])  # leftovers only at the end
    for b in batches:
        assert [plan.lengths[i] for i in b] == sorted((plan.lengths[i] for i in b), reverse=True)


def test_deterministic_per_seed_and_epoch():
    a, _ = _plan()
    b, _ = _plan()
    assert a.epoch_batches(1) == b.epoch_batches(1)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.batch_at(a.steps_per_epoch + 2) == a.epoch_batches(1)[2]


def test_tail_smaller_than_world_is_dropped():
    plan, _ = _plan(min_batch_size=4, group_by_modality=False)
    assert all(len(b) >= 4 for b in plan.epoch_batches(0))  # 23 = 5*4 + 3: the tail of 3 is dropped


def test_split_is_a_partition_over_ranks():
    batch = list(range(10))
    for world in (1, 2, 3):
        parts = [
            split_global_batch(batch, micro_batch_size=2, rank=r, world_size=world) for r in range(world)
        ]
        flat = sorted(i for rank in parts for mb in rank for i in mb)
        assert flat == batch
        assert all(rank for rank in parts)  # every process has work
    # a short tail: 3 samples, micro 4, 2 processes -> both get samples
    parts = [split_global_batch([7, 8, 9], micro_batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert parts == [[[7]], [[8, 9]]]


def test_collator_pads_right_masks_padding_and_orders_images():
    import torch

    from vistune.data.dataset import Collator, Sample

    a = Sample(
        "a", torch.tensor([1, 5, 6]), torch.tensor([-100, -100, 6]), [], pixel_values=torch.zeros(1, 3, 2, 2)
    )
    b = Sample("b", torch.tensor([1, 7]), torch.tensor([-100, 7]), [], pixel_values=torch.ones(2, 3, 2, 2))
    bad = Sample(
        "c", torch.tensor([1]), torch.tensor([1]), ["x.png"], error="image file x.png cannot be read"
    )
    batch = Collator(pad_token_id=3)([a, bad, b])
    assert batch.input_ids.tolist() == [[1, 5, 6], [1, 7, 3]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist() == [[-100, -100, 6], [-100, 7, -100]]
    assert batch.num_tokens == 2 and batch.record_ids == ["a", "b"]
    assert batch.pixel_values[:, 0, 0, 0].tolist() == [0.0, 1.0, 1.0]  # a's image, then b's two
    assert batch.dropped == [{"id": "c", "reason": "image file x.png cannot be read"}]


def test_records_sharing_a_conversation_get_its_tokens_and_are_each_counted(tiny_tokenizer, tmp_path):
    """A conversation repeated on many images is tokenized once; every record still gets exactly the tokens it
    gets alone, and each all-masked one (here: cut to nothing by max_length) is named in the report."""
    import torch
    from PIL import Image

    from vistune.data.dataset import LlavaDataset
    from vistune.data.records import parse_record
    from vistune.text.tokenize import tokenize_conversation

    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    short = [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "Red."}]
    long = [{"from": "human", "value": "<image>\n" + "word " * 300}, {"from": "gpt", "value": "Yes."}]
    raws = [
        {"id": "s1", "image": "a.png", "conversations": short},
        {"id": "l1", "image": "a.png", "conversations": long},
        {"id": "s2", "image": "b.png", "conversations": [dict(t) for t in short]},
        {"id": "l2", "image": "b.png", "conversations": long},
    ]
    records = [parse_record(r, index=i) for i, r in enumerate(raws)]
    ds = LlavaDataset(
        records,
        tokenizer=tiny_tokenizer,
        template="vicuna_v1",
        num_image_tokens=3,
        image_token_id=-200,
        image_folder=tmp_path,
        max_length=96,
        image_processor=lambda images: torch.zeros(len(images), 3, 4, 4),
        load_image=Image.open,
    )
    alone = tokenize_conversation(short, tiny_tokenizer, "vicuna_v1", num_image_tokens=3, max_length=96)
    assert [ds[i].record_id for i in range(len(ds))] == ["s1", "s2"]
    assert [ds[i].images for i in range(len(ds))] == [[str(tmp_path / "a.png")], [str(tmp_path / "b.png")]]
    for i in range(len(ds)):
        assert ds[i].input_ids.tolist() == alone.input_ids and ds[i].labels.tolist() == alone.labels
    assert ds.entries[0].input_ids is ds.entries[1].input_ids  # tokenized once, the arrays shared
    assert ds.report.all_masked == ["l1", "l2"] and ds.report.kept == 2


def test_conversation_key_ignores_key_order_and_gives_up_on_unhashable_turns():
    from vistune.data.dataset import _conversation_key

    a = [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello."}]
    b = [{"value": "<image>\nHi", "from": "human"}, {"value": "Hello.", "from": "gpt"}]
    assert _conversation_key(a) == _conversation_key(b) is not None
    assert _conversation_key(a) != _conversation_key([*a[:1], {"from": "gpt", "value": "Hello!"}])
    assert _conversation_key([{"from": "human", "value": ["not", "text"]}]) is None  # tokenized every time
