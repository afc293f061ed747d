"""detector.data.ids: which ids and relative paths stay inside their folder."""
import pytest

from detector.data.ids import file_name_problem, relative_path_problem, safe_image_id


@pytest.mark.parametrize("name, problem", [
    ("000005", None), ("2008_000001", None), ("a..b", None), ("a.jpg", None), ("..a", None),
    ("", "is empty"), ("..", "is '..'"), (".", "is '.'"), ("../x", "holds a path separator"),
    ("a/b", "holds a path separator"), ("a\\b", "holds a path separator"), ("/etc/passwd", "holds a path separator"),
    ("a\0b", "holds a NUL character"),
])
def test_file_name_problem(name, problem):
    assert file_name_problem(name) == problem


@pytest.mark.parametrize("name, problem", [
    ("x.jpg", None), ("train/x.jpg", None), ("a..b/x.jpg", None), ("./x.jpg", None),
    ("/abs/x.jpg", "is an absolute path"), ("\\\\server\\x.jpg", "is an absolute path"),
    ("C:x.jpg", "is an absolute path"), ("../x.jpg", "holds '..'"), ("train/../../x.jpg", "holds '..'"),
    ("train\\..\\x.jpg", "holds '..'"), ("a\0.jpg", "holds a NUL character"),
])
def test_relative_path_problem(name, problem):
    assert relative_path_problem(name) == problem


@pytest.mark.parametrize("name, safe", [("", "_"), (".", "_"), ("..", "__"), ("a/b", "a_b"), ("a\\b", "a_b"),
                                        ("a\0b", "a_b"), ("plain", "plain"), ("...", "...")])
def test_safe_image_id_is_always_a_file_name(name, safe):
    assert safe_image_id(name) == safe and file_name_problem(safe) is None
