import numpy as np
import pytest

from detector import fileio


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    fileio.write_json_atomic(p, {"x": 1})
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text().strip().startswith("{")
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_npz_round_trip_and_digests(tmp_path):
    p = tmp_path / "sub" / "x.npz"
    fileio.save_npz_atomic(p, a=np.arange(5))
    with np.load(p, allow_pickle=False) as z:
        assert z["a"].tolist() == [0, 1, 2, 3, 4]
    d1 = fileio.file_digest(p)
    fileio.save_npz_atomic(p, a=np.arange(6))
    assert fileio.file_digest(p) != d1
    assert fileio.params_digest({"a": 1, "b": 2}) == fileio.params_digest({"b": 2, "a": 1})
    assert fileio.params_digest({"a": 1}) != fileio.params_digest({"a": 2})


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    p = tmp_path / "m.json"
    fileio.write_json_atomic(p, {})
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("name, expected", [("a/b", "a%2Fb"), ("..", "%2E%2E"), (".", "%2E"), ("", "_"),
                                            ("2008_000001", "2008_000001"), ("a..b", "a..b")])
def test_safe_file_name_stays_inside_its_folder(tmp_path, name, expected):
    from urllib.parse import unquote
    assert fileio.safe_file_name(name) == expected
    assert (tmp_path / fileio.safe_file_name(name)).resolve().parent == tmp_path.resolve()
    assert unquote(expected) == (name or "_")  # reversible
