"""Collecting inputs: folders (recursive), list files, globs; sorted absolute paths."""
from __future__ import annotations

import os

import pytest

from tipsv2_sdk.index.inputs import InputError, collect_inputs, fingerprint, read_list_file


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ["b.png", "a/c.JPG", "a/deep/d.webp", "notes.txt", "a/readme.md", ".hidden/e.png", "a/.f.png"]:
        (tmp_path / rel).write_bytes(b"x")
    return tmp_path


def test_folder_is_walked_recursively_sorted_and_filtered(tree):
    got = collect_inputs(tree)
    rel = [os.path.relpath(p, tree) for p in got.paths]
    assert rel == sorted(rel) == ["a/c.JPG", "a/deep/d.webp", "b.png"]
    assert all(os.path.isabs(p) for p in got.paths)
    assert got.ignored == 2  # notes.txt and readme.md; hidden entries are not counted


def test_order_does_not_depend_on_source_order_and_duplicates_collapse(tree):
    one = collect_inputs([tree / "b.png", tree / "a"]).paths
    two = collect_inputs([tree / "a", tree / "b.png", tree / "a" / "c.JPG"]).paths
    assert one == two and len(one) == 3


def test_list_file_entries_are_relative_to_the_list(tree, tmp_path):
    lst = tmp_path / "sub" / "files.txt"
    lst.parent.mkdir()
    lst.write_text(f"# comment\n../b.png\n\n{tree / 'a' / 'c.JPG'}\n../missing.png\n")
    got = collect_inputs(lst).paths
    assert got == sorted([str(tree / "a" / "c.JPG"), str(tree / "b.png"), str(tmp_path / "missing.png")])


def test_csv_list_uses_first_column_and_skips_header(tmp_path):
    csv = tmp_path / "files.csv"
    csv.write_text("path,caption\nx.png,a cat\n\"y.jpg\",a dog\n")
    assert read_list_file(csv) == [str(tmp_path / "x.png"), str(tmp_path / "y.jpg")]


def test_glob(tree):
    got = collect_inputs(str(tree / "**" / "*.*")).paths
    assert [os.path.basename(p) for p in got] == ["c.JPG", "d.webp", "b.png"]


@pytest.mark.parametrize("bad", ["missing_dir", "nothing*.png"])
def test_missing_sources_are_named(tmp_path, bad):
    with pytest.raises(InputError, match="missing_dir|nothing"):
        collect_inputs(tmp_path / bad)


def test_non_image_non_list_file_is_refused(tree):
    with pytest.raises(InputError, match="readme.md"):
        collect_inputs(tree / "a" / "readme.md")


def test_empty_source_list_is_refused():
    with pytest.raises(InputError, match="no input"):
        collect_inputs([])


def test_fingerprint_depends_on_order_and_content():
    assert fingerprint(["a", "b"]) == fingerprint(["a", "b"])
    assert fingerprint(["a", "b"]) != fingerprint(["b", "a"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])
