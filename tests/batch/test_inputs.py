"""Tests of drdm.batch.inputs: pairing images with label maps and listing a run's inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drdm.batch.inputs import InputItem, find_pairs, input_name, list_inputs
from drdm.errors import InputError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_pairs_folders(tmp_path):
    acdc = tmp_path / "acdc"
    for name in ["p1_4d", "p1_frame01", "p1_frame01_gt", "p1_frame12", "p1_frame12_gt"]:
        touch(acdc / f"{name}.nii.gz")
    touch(acdc / "Info.cfg")
    pairs = find_pairs(acdc)
    assert [(i.name, lab.name if lab else None) for i, lab in pairs] == [
        ("p1_4d.nii.gz", None),
        ("p1_frame01.nii.gz", "p1_frame01_gt.nii.gz"),
        ("p1_frame12.nii.gz", "p1_frame12_gt.nii.gz"),
    ]
    assert len(find_pairs(acdc, labeled_only=True)) == 2
    mixed = tmp_path / "mixed"
    for name in ["a.nii.gz", "a_seg.nii.gz", "b.mha", "b_mask.mha", "c.nrrd", "d_label.nii"]:
        touch(mixed / name)
    with pytest.warns(UserWarning, match=r"d_label.nii: a label file without its image"):
        named = {i.name: lab.name if lab else None for i, lab in find_pairs(mixed)}
    assert named == {"a.nii.gz": "a_seg.nii.gz", "b.mha": "b_mask.mha", "c.nrrd": None}
    nnunet = tmp_path / "task"
    touch(nnunet / "imagesTr" / "case1_0000.nii.gz")
    touch(nnunet / "imagesTr" / "case2_0000.nii.gz")
    touch(nnunet / "labelsTr" / "case1.nii.gz")
    assert [(i.name, lab.name if lab else None) for i, lab in find_pairs(nnunet)] == [
        ("case1_0000.nii.gz", "case1.nii.gz"),
        ("case2_0000.nii.gz", None),
    ]
    plain = tmp_path / "plain"
    touch(plain / "x.nii.gz")
    touch(plain / "labels" / "x.nii.gz")
    assert find_pairs(plain) == [(plain / "x.nii.gz", plain / "labels" / "x.nii.gz")]
    touch(tmp_path / "twice" / "x.nii.gz")
    touch(tmp_path / "twice" / "x_gt.nii.gz")
    touch(tmp_path / "twice" / "x_seg.nii.gz")
    with pytest.raises(InputError, match="several label candidates"):
        find_pairs(tmp_path / "twice")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found") as error:
        find_pairs(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(error.value)
    with pytest.raises(InputError, match="no such file"):
        find_pairs(tmp_path / "nowhere")


def test_find_pairs_lists(tmp_path):
    touch(tmp_path / "data" / "a.nii.gz")
    touch(tmp_path / "data" / "a_gt.nii.gz")
    touch(tmp_path / "data" / "b.nii.gz")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,label\ndata/a.nii.gz,data/a_gt.nii.gz\ndata/b.nii.gz,\n")
    expected = [
        (tmp_path / "data" / "a.nii.gz", tmp_path / "data" / "a_gt.nii.gz"),
        (tmp_path / "data" / "b.nii.gz", None),
    ]
    assert find_pairs(csv_path) == expected
    (tmp_path / "images.csv").write_text("image\ndata/b.nii.gz\n")
    assert find_pairs(tmp_path / "images.csv") == [(tmp_path / "data" / "b.nii.gz", None)]
    entries = [{"image": "data/a.nii.gz", "label": "data/a_gt.nii.gz"}, {"image": "data/b.nii.gz"}]
    (tmp_path / "pairs.json").write_text(json.dumps(entries))
    assert find_pairs(tmp_path / "pairs.json") == expected
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries}))
    assert find_pairs(tmp_path / "dataset.json") == expected
    (tmp_path / "bad.csv").write_text("image,label\ndata/missing.nii.gz,\n")
    with pytest.raises(InputError, match="row 2.*does not exist"):
        find_pairs(tmp_path / "bad.csv")
    (tmp_path / "nocol.csv").write_text("path\ndata/a.nii.gz\n")
    with pytest.raises(InputError, match="'image' column"):
        find_pairs(tmp_path / "nocol.csv")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read the JSON"):
        find_pairs(tmp_path / "bad.json")
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(InputError, match="the list names no images"):
        find_pairs(tmp_path / "empty.csv")


def test_input_names():
    assert input_name("a/b/img.nii.gz") == "img"
    assert input_name("a/b/img.NII") == "img"
    assert input_name("x.mha") == "x"
    assert input_name("dicom_series") == "dicom_series"
    items = list_inputs(input=None, image="d/img.nii.gz", labels=["d/lab.nii.gz"])
    assert items == [InputItem(0, "img", items[0].image, items[0].labels)]
    assert [str(p) for p in items[0].labels] == ["d/lab.nii.gz"]


def test_input_lists_and_unique_names(tmp_path):
    for name in ("a.nii.gz", "a_seg.nii.gz", "b.mha"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.nii").write_bytes(b"")
    items = list_inputs(input=tmp_path)  # folder: labels paired by find_pairs
    assert [(i.name, [p.name for p in i.labels]) for i in items] == [
        ("a", ["a_seg.nii.gz"]),
        ("b", []),
    ]
    listing = tmp_path / "list.csv"
    listing.write_text("image,label\na.nii.gz,a_seg.nii.gz\nsub/a.nii,\n")
    items = list_inputs(input=listing)
    assert [i.name for i in items] == ["a", "a-2"]  # repeated stems made unique in list order
    assert items[1].image == tmp_path / "sub" / "a.nii" and items[1].labels == ()
    listing = tmp_path / "list.json"
    listing.write_text(
        json.dumps([{"image": "b.mha"}, {"image": "a.nii.gz", "label": "a_seg.nii.gz"}])
    )
    assert [(i.index, i.name, len(i.labels)) for i in list_inputs(input=listing)] == [
        (0, "b", 0),
        (1, "a", 1),
    ]


def test_empty_folder_and_bad_list(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found") as info:
        list_inputs(input=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        list_inputs(input=tmp_path / "bad.json")


def test_list_inputs_option_errors(tmp_path):
    with pytest.raises(InputError, match="exactly one"):
        list_inputs()
    with pytest.raises(InputError, match="exactly one"):
        list_inputs(image="a.nii", input="b.csv")
    with pytest.raises(InputError, match="no such file"):
        list_inputs(input=tmp_path / "missing")
    with pytest.raises(InputError, match="labels go with image"):
        list_inputs(input=tmp_path, labels=["l.nii"])
