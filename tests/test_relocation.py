"""A moved run folder's recorded paths: the roots of the move, and paths rewritten only where a path
starts and ends."""
import pytest

from bertdistill import relocation


@pytest.mark.parametrize("recorded, folder, roots", [
    ("/a/out/teacher_1", "/b/res/teacher_1", ("/a/out", "/b/res")),  # the pipeline folder moved
    ("/a/out", "/b/res", ("/a/out", "/b/res")),
    ("/a/out/teacher_1", "/a/out/teacher_2", ("/a/out/teacher_1", "/a/out/teacher_2")),  # renamed itself
    ("/x/run", "/y/x/run", ("/", "/y")),  # moved one level down
    ("/a/out/teacher_1", "/a/out/teacher_1", None),
    (None, "/a/out/teacher_1", None),  # recorded before folders were recorded
])
def test_moved_roots(recorded, folder, roots):
    assert relocation.moved_roots(recorded, folder) == roots


@pytest.mark.parametrize("value, moved", [
    ("/a/out/teacher_1/export", "/b/res/teacher_1/export"),
    ("/a/out", "/b/res"),
    ("--teacher_model=/a/out/teacher_1/export", "--teacher_model=/b/res/teacher_1/export"),
    ("--model_dir=/a/out/t1,/a/out/t2,/c/t3", "--model_dir=/b/res/t1,/b/res/t2,/c/t3"),
    ("/a/outer/t1", "/a/outer/t1"),  # another folder that starts with the same letters
    ("/c/a/out/t1", "/c/a/out/t1"),  # the same names inside another path
    ("--name=a/out/t1", "--name=a/out/t1"),  # a relative path
    (["/a/out/x", 3, {"k": "/a/out/y"}], ["/b/res/x", 3, {"k": "/b/res/y"}]),
    (0.5, 0.5),
])
def test_relocate(value, moved):
    assert relocation.relocate(value, ("/a/out", "/b/res")) == moved


def test_relocate_from_and_to_the_root_folder():
    assert relocation.relocate("--data_dir=/x/run/data", ("/", "/y")) == "--data_dir=/y/x/run/data"
    assert relocation.relocate("--data_dir=/y/x/run/data", ("/y", "/")) == "--data_dir=/x/run/data"
    assert relocation.relocate(["", "--flag=", "a,,b"], ("/", "/y")) == ["", "--flag=", "a,,b"]  # no path here


def test_same_setting_takes_a_value_as_written_or_moved():
    roots = ("/a/out", "/b/res")
    assert relocation.same_setting("/c/data", "/c/data", roots)  # outside the moved folder
    assert relocation.same_setting("/a/out/t", "/b/res/t", roots)
    assert relocation.same_setting("/a/out/t", "/a/out/t", roots)  # an input left where it was
    assert not relocation.same_setting("/a/out/t", "/b/res/u", roots)
    assert not relocation.same_setting("/a/out/t", "/b/res/t", None)
