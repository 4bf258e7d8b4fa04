"""Readers on miniature datasets in the exact shipped layouts: pairing, label decoding, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tipsv2_sdk.eval.datasets import (DatasetError, image_folder_dataset, karpathy_dataset, open_depth,
                                      open_segmentation, read_depth, read_label)
from tipsv2_sdk.eval.metrics import prepare_target


def _decoded(ds, sample_index=0):
    sample = ds.samples[sample_index]
    return prepare_target(read_label(sample.label), ds.num_classes, ds.ignore_index, ds.reduce_zero_label)


@pytest.mark.parametrize("key, builder, object_name, other_name, ignored_top_row", [
    ("voc21", "voc", "person", "background", False),
    ("voc20", "voc", "person", None, False),
    ("ade150", "ade", "person", "sky", True),
    ("pc59", "pascal_context", "person", None, False),
    ("pc60", "pascal_context", "person", "background", False),
    ("cocostuff", "coco_stuff", "person", "sky-other", False),
])
def test_each_layout_pairs_files_and_decodes_ids_to_the_right_names(layouts, key, builder, object_name, other_name,
                                                                   ignored_top_row):
    root = getattr(layouts, builder)(layouts.root(builder))
    ds = open_segmentation(key, root)
    assert len(ds) == 2 and ds.split in ("val", "validation", "val2017")
    for sample in ds.samples:
        assert sample.image.is_file() and sample.label.is_file()
    _, mask = layouts.scene(0 if key in ("ade150", "pc59", "pc60", "cocostuff") else 100)
    target = _decoded(ds)
    assert target.shape == layouts.size
    rows = slice(1, None) if ignored_top_row else slice(None)
    obj = target[rows][mask[rows] == 1]
    assert {ds.classes[i] for i in obj[obj >= 0]} == {object_name}
    rest = target[rows][mask[rows] == 0]
    if other_name is None:  # the background is ignored (voc20, pc59)
        assert (rest == -1).all()
    else:
        assert {ds.classes[i] for i in rest[rest >= 0]} == {other_name}
    if key.startswith("voc"):
        assert (target[:, 0] == -1).all()  # the 255 outline is ignored
    if ignored_top_row:
        assert (target[0] == -1).all()  # ADE's 0 = "other"
    assert open_segmentation(key, root, train=True).split in ("train", "training", "train2017")


def test_voc_labels_are_palette_indices_not_colours(layouts):
    root = layouts.voc(layouts.root("voc"))
    ds = open_segmentation("voc21", root)
    img = Image.open(ds.samples[0].label)
    assert img.mode == "P"
    assert set(np.unique(read_label(ds.samples[0].label)).tolist()) == {0, 15, 255}
    rgb_label = ds.samples[0].label.with_name("colour.png")
    img.convert("RGB").save(rgb_label)
    with pytest.raises(DatasetError, match="colour"):
        read_label(rgb_label)


def test_root_may_be_the_dataset_folder_or_any_parent_in_the_layout(layouts):
    base = layouts.voc(layouts.root("voc"))
    for root in (base, base / "VOCdevkit", base / "VOCdevkit" / "VOC2012"):
        assert open_segmentation("voc21", root).root == base / "VOCdevkit" / "VOC2012"
    ade = layouts.ade(layouts.root("ade"))
    assert open_segmentation("ade150", ade / "ADEChallengeData2016").root == ade / "ADEChallengeData2016"


def test_layout_errors_name_what_is_missing(layouts, tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        open_segmentation("voc21", tmp_path / "nope")
    with pytest.raises(DatasetError, match="ImageSets/Segmentation"):
        open_segmentation("voc21", layouts.ade(layouts.root("ade")))
    voc = layouts.voc(layouts.root("voc"))
    with pytest.raises(DatasetError, match="trainaug.txt"):
        open_segmentation("voc21", voc, "trainaug")
    with pytest.raises(DatasetError, match="no split"):
        open_segmentation("ade150", layouts.root("ade"), "test")
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_segmentation("voc12", voc)
    coco = layouts.coco_stuff(layouts.root("coco"))
    for path in (coco / "coco_stuff164k" / "annotations" / "val2017").iterdir():
        path.rename(path.with_name(path.name.replace("_labelTrainIds", "")))  # raw stuffthingmaps naming
    with pytest.raises(DatasetError, match="coco_stuff164k.py"):
        open_segmentation("cocostuff", coco)


def test_an_image_without_label_is_listed_and_fails_when_read(layouts):
    root = layouts.ade(layouts.root("ade"))
    ds = open_segmentation("ade150", root)
    ds.samples[1].label.unlink()
    assert len(open_segmentation("ade150", root)) == 2  # kept, so the evaluation reports it as skipped
    with pytest.raises(DatasetError, match="label not found"):
        read_label(ds.samples[1].label)


def test_image_folder_names_from_txt_tab_json_or_folders(layouts, tmp_path):
    root, names = layouts.image_folder(layouts.root("imagenet"))
    ds = image_folder_dataset(root, names)
    assert ds.folders == ["n00000001", "n00000002"] and ds.class_names == ["red square", "blue square"]
    assert ds.labels == [0, 0, 1, 1] and all(p.parent.name == ds.folders[y] for p, y in zip(ds.images, ds.labels))
    tab = tmp_path / "map.txt"
    tab.write_text("n00000002\tsky blue\nn00000001\tbrick red\n")
    assert image_folder_dataset(root, tab).class_names == ["brick red", "sky blue"]
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps({"n00000001": "a", "n00000002": "b"}))
    assert image_folder_dataset(root, as_json).class_names == ["a", "b"]
    as_json.write_text(json.dumps(["x", "y"]))
    assert image_folder_dataset(root, as_json).class_names == ["x", "y"]
    assert image_folder_dataset(root).class_names == ["n00000001", "n00000002"]
    bad = tmp_path / "bad.txt"
    bad.write_text("only one\n")
    with pytest.raises(DatasetError, match="1 names for 2"):
        image_folder_dataset(root, bad)
    bad.write_text("same\nsame\n")
    with pytest.raises(DatasetError, match="repeated"):
        image_folder_dataset(root, bad)


def test_karpathy_split_paths_captions_and_missing_images(layouts, tmp_path):
    root = layouts.karpathy(layouts.root("coco"))
    ds = karpathy_dataset(root)
    assert ds.name == "coco" and len(ds) == 3 and len(ds.texts) == 7  # 3 + 2 + 2 captions
    assert ds.text_image == [0, 0, 0, 1, 1, 2, 2]
    assert karpathy_dataset(root, max_captions=1).text_image == [0, 1, 2]
    (root / "val2014" / "COCO_val2014_000000000001.jpg").unlink()
    ds = karpathy_dataset(root)
    assert len(ds) == 2 and ds.missing == ["COCO_val2014_000000000001.jpg"] and ds.text_image == [0, 0, 0, 1, 1]
    with pytest.raises(DatasetError, match="splits: test, train"):
        karpathy_dataset(root, split="val")
    # Flickr30k: no filepath, images in flickr30k-images/, the JSON one level up
    flickr = tmp_path / "flickr"
    (flickr / "flickr30k-images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flickr / "flickr30k-images" / "1000092795.jpg")
    (flickr / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two young guys."}]}]}))
    ds = karpathy_dataset(flickr / "flickr30k-images")
    assert ds.name == "flickr30k" and ds.texts == ["Two young guys."]
    with pytest.raises(DatasetError, match="--annotations"):
        karpathy_dataset(tmp_path / "flickr" / "flickr30k-images", annotations=tmp_path / "none.json")


def test_nyu_both_layouts_read_millimetre_pngs_as_metres(layouts):
    mmseg = layouts.nyu_mmseg(layouts.root("nyu_mmseg"))
    lists = layouts.nyu_lists(layouts.root("nyu_bts"))
    for root in (mmseg, lists):
        train, test = open_depth(root, "train"), open_depth(root, "test")
        assert (len(train), len(test)) == (4, 2)
        depth = read_depth(test.samples[1].depth)
        _, expected = layouts.depth_scene(1)
        assert depth.dtype == np.float32 and np.allclose(depth, expected / 1000.0)
        assert depth[0, 0] == 0 and depth.max() == pytest.approx(4.0)
    bts = open_depth(lists, "test")
    assert all("official_splits/test" in str(s.image) for s in bts.samples)  # not the same names under sync/
    assert all("sync" in str(s.image) for s in open_depth(lists, "train").samples)
    with pytest.raises(DatasetError, match="images/test"):
        open_depth(layouts.root("nowhere_nyu").parent, "test")
