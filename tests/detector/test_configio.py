"""The YAML layer: ``_base_`` chains, and errors blamed on the right file."""
import dataclasses

import pytest

from detector.configio import ConfigError, load_config, load_yaml_chain


@dataclasses.dataclass
class Section:
    scales: list[int] = dataclasses.field(default_factory=lambda: [688])
    layers: int = 0

    def validate(self):
        if self.layers < 0:
            raise ValueError("layers must be >= 0")


@dataclasses.dataclass
class Cfg:
    part: Section = dataclasses.field(default_factory=Section)
    name: str = "default"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_keys_then_the_files_own_section_by_section(tmp_path):
    write(tmp_path / "base.yaml", "part:\n  scales: [480, 576]\n  layers: 1\nname: base\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\npart:\n  layers: 2\n")
    cfg = load_config(Cfg, child)
    assert cfg == Cfg(Section([480, 576], 2), "base")
    # A list in the file replaces the base's list; overrides come last.
    write(tmp_path / "list.yaml", "_base_: child.yaml\npart:\n  scales: [874]\n")
    assert load_config(Cfg, tmp_path / "list.yaml", ["name=cli"]) == Cfg(Section([874], 2), "cli")


def test_base_path_is_relative_to_the_file_that_names_it(tmp_path):
    write(tmp_path / "common" / "base.yaml", "name: from-common\n")
    child = write(tmp_path / "sets" / "child.yaml", "_base_: ../common/base.yaml\n")
    chain = load_yaml_chain(child)
    assert [p.name for p, _ in chain] == ["base.yaml", "child.yaml"]
    assert all("_base_" not in data for _, data in chain)
    assert load_config(Cfg, child).name == "from-common"


@pytest.mark.parametrize("files, entry, message", [
    ({"child.yaml": "_base_: nosuch.yaml\n"}, "child.yaml", r"child.yaml: _base_ file nosuch.yaml not found"),
    ({"odd.yaml": "_base_: [a.yaml]\n"}, "odd.yaml", r"odd.yaml: _base_ must be a file name"),
    ({"empty.yaml": "_base_:\nname: x\n"}, "empty.yaml", r"empty.yaml: _base_ must be a file name, got None"),
    # A cycle is blamed on the file whose _base_ closes the loop.
    ({"a.yaml": "_base_: b.yaml\n", "b.yaml": "_base_: a.yaml\n"}, "a.yaml", r"b.yaml: _base_ a.yaml closes a cycle"),
    ({"self.yaml": "_base_: self.yaml\n"}, "self.yaml", r"self.yaml: _base_ self.yaml closes a cycle"),
])
def test_bad_base_names_the_file_that_asks_for_it(tmp_path, files, entry, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, tmp_path / entry)


def test_error_is_blamed_on_the_file_that_brings_it_in(tmp_path):
    write(tmp_path / "bad_base.yaml", "part:\n  nosuch: 1\n")
    write(tmp_path / "child.yaml", "_base_: bad_base.yaml\nname: fine\n")
    with pytest.raises(ConfigError, match=r"bad_base.yaml.*nosuch"):
        load_config(Cfg, tmp_path / "child.yaml")
    write(tmp_path / "base.yaml", "part:\n  layers: 1\n")
    write(tmp_path / "bad_child.yaml", "_base_: base.yaml\npart:\n  layers: -1\n")
    with pytest.raises(ConfigError, match=r"bad_child.yaml.*layers must be >= 0"):
        load_config(Cfg, tmp_path / "bad_child.yaml")
    with pytest.raises(ConfigError, match=r"command line \(over .*base.yaml\).*layers"):
        load_config(Cfg, tmp_path / "base.yaml", ["part.layers=-2"])
