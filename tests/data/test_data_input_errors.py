"""Bad RNTuple and image inputs: one line naming the file, the field and the way out, and nothing
left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import skhep_testdata
import yaml

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.toy import IMAGE_BRANCHES, write_toy_dataset
from gridtrain.errors import ConfigError, ConversionError
from tests.conftest import convert_cli_line, toy_section

FILES = Path(__file__).parent / "rntuple"
STL = FILES / "test_stl_containers_rntuple_v1-0-0-0.root"
STAFF = FILES / "ntpl001_staff_rntuple_v1-0-0-0.root"


def refused(section: dict, out: Path, pattern: str) -> str:
    """Convert; expect a one-line ConversionError matching ``pattern`` and an empty ``out``."""
    with pytest.raises(ConversionError, match=pattern) as error:
        convert(DatasetConfig.from_dict({"event_id": [], "outdir": str(out), **section}))
    message = str(error.value)
    assert "\n" not in message, message
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"left behind: {left}"
    return message


def one_file(path: Path, tree: str) -> dict:
    return {"tree": tree, "samples": [{"name": "s", "files": [str(path)], "label": 0}]}


REFUSED = [
    ("string", "features", r"field 'string' \(feature\).*std::string \(its values are a string"),
    (
        "vector_vector_int32",
        "jagged",
        r"std::vector<std::vector<std::int32_t>>.*nested beyond one level",
    ),
    ("vector_string", "jagged", r"'vector_string'.*\(its values are a string\).*not strings"),
    ("variant_int32_string", "features", r"std::variant<std::int32_t,std::string>.*union"),
    ("lorentz_vector", "features", r"type LV \(its values are a record of \['pt', 'eta'"),
    ("vector_int32", "features", r"'vector_int32' \(feature\) is a list per event.*jagged"),
    ("array_float", "jagged", r"'array_float' in jagged group 'g' is not a list.*features"),
    ("vector_int32", "images", r"'vector_int32' \(image 'i'\).*cannot become an image tensor"),
]


@pytest.mark.parametrize(("field", "where", "pattern"), REFUSED)
def test_a_field_that_cannot_become_an_array(tmp_path, field, where, pattern):
    section = one_file(STL, "ntuple")
    if where == "features":
        section["features"] = [field]
    elif where == "jagged":
        section["jagged"] = {"g": {"branches": [field], "length": 3}}
    else:
        section["images"] = {"i": {"branches": [field]}}
    message = refused(section, tmp_path / "out", pattern)
    assert message.startswith(f"{STL}: ")


def test_a_string_field_of_real_staff_data(tmp_path):
    section = {**one_file(STAFF, "Staff"), "features": ["Age", "Nation"]}
    refused(section, tmp_path / "out", r"field 'Nation' \(feature\).*choose numeric fields")


def test_an_rntuple_from_before_1_0_says_how_to_read_it(tmp_path):
    old = skhep_testdata.data_path("uproot-ntpl001_staff.root")
    section = {**one_file(Path(old), "Staff"), "features": ["Age"]}
    refused(section, tmp_path / "out", r"'Staff' is an RNTuple from before RNTuple 1\.0.*6\.34")


def test_a_missing_rntuple_lists_what_the_file_holds(tmp_path):
    section = {**one_file(STAFF, "Events"), "features": ["Age"]}
    pattern = r"no TTree or RNTuple 'Events'; trees in this file: \['Staff'\]"
    refused(section, tmp_path / "out", pattern)


def test_a_missing_field_suggests_and_lists(tmp_path):
    section = {**one_file(STAFF, "Staff"), "features": ["Agee"]}
    refused(section, tmp_path / "out", r"has no field 'Agee' \(feature\); did you mean \['Age'\]")


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict[str, Path]:
    """Small toys: TTree with 8x8 images, RNTuple with 6x6 images, RNTuple without images."""
    made = {}
    for name, file_format, size in (
        ("ttree8", "ttree", 8),
        ("rntuple6", "rntuple", 6),
        ("rntuple", "rntuple", None),
    ):
        made[name] = tmp_path_factory.mktemp(name)
        write_toy_dataset(made[name], 400, seed=2, file_format=file_format, image_size=size)
    return made


def mixed(toys: dict[str, Path], background: str, out: Path) -> dict:
    section = toy_section(toys["ttree8"], out, images={"jet_image": {"branches": IMAGE_BRANCHES}})
    section["samples"][1]["files"] = [str(toys[background] / "background.root")]
    section.pop("outdir")
    return section


def test_an_image_whose_shape_differs_between_files(toys, tmp_path):
    message = refused(
        mixed(toys, "rntuple6", tmp_path / "out"),
        tmp_path / "out",
        r"rntuple6\d*/background\.root: image branch 'jet_image_charged' \('jet_image'\) has shape "
        r"6x6 here but 8x8 in .*ttree8\d*/signal\.root; .*convert files of each shape as their own",
    )
    assert "rebin" in message


def test_a_mixed_dataset_where_one_file_lacks_a_field(toys, tmp_path):
    refused(
        mixed(toys, "rntuple", tmp_path / "out"),
        tmp_path / "out",
        r"rntuple\d*/background\.root: RNTuple 'events' has no field 'jet_image_charged' "
        r"\(image 'jet_image'\); .*every input file needs it: drop this file or the name",
    )


def test_the_cli_says_it_in_one_line(toys, tmp_path):
    config = tmp_path / "config.yaml"
    section = mixed(toys, "rntuple", tmp_path / "out")
    config.write_text(yaml.safe_dump({"dataset": {**section, "outdir": str(tmp_path / "out")}}))
    line = convert_cli_line(config)
    assert "background.root" in line
    assert "'jet_image_charged'" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["features", "label", "constituents", "x_count"])
def test_an_image_name_that_clashes_with_another_dataset(toys, tmp_path, name):
    images = {name: {"branches": ["jet_image_charged"]}}
    section = toy_section(toys["ttree8"], tmp_path, images=images)
    with pytest.raises(ConfigError, match=rf"image name '{name}' clashes.*rename it"):
        DatasetConfig.from_dict(section)


def test_a_scalar_branch_is_not_an_image(toys, tmp_path):
    section = toy_section(toys["ttree8"], tmp_path / "out", images={"i": {"branches": ["jet_pt"]}})
    section.pop("outdir")
    refused(section, tmp_path / "out", r"branch 'jet_pt' of image 'i' is one number per event")


def test_a_corrupt_rntuple_page_mid_conversion_leaves_nothing(tmp_path):
    import uproot

    toy = tmp_path / "toy"
    write_toy_dataset(toy, 50_000, seed=6, file_format="rntuple")  # clusters of 10,000
    ntuple = uproot.open(toy / "background.root")["events"].ntuple
    field = next(i for i, f in enumerate(ntuple.field_records) if f.field_name == "part_pt")
    columns = [i for i, c in enumerate(ntuple.column_records) if c.field_id == field]
    page = ntuple.page_link_list[2][columns[-1]].pages[0]  # part_pt's values, third cluster
    with open(toy / "background.root", "r+b") as f:
        f.seek(page.locator.offset + page.locator.num_bytes // 3)
        f.write(b"\xa5" * 200)
    section = toy_section(toy, tmp_path / "out", step_events=3000, shard_events=2000)
    section.pop("outdir")
    # uproot reads a range together with the cluster after it: the range before the bad cluster
    # fails, after the shards of earlier steps were written (and are gone again)
    refused(
        section,
        tmp_path / "out",
        r"background\.root: field 'part_pt' cannot be read at entries 10000-20000 \(.*\); "
        r"the file is truncated or corrupt, copy it again",
    )
