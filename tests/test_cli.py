import pytest

from conftest import run_cli


@pytest.mark.parametrize("command,expected", [
    ("models", ["ssd_512_mobilenet1.0_voc", "yolo3_mobilenet1.0_coco", "ssd_512_resnet50_v1_voc", "mobilenetv2_1.0"]),
    ("targets", ["x86_64", "skylake-avx512", "cascadelake", "aarch64", "rk3399", "rasp4b64", "armv7"]),
])
def test_listing_commands(command, expected):
    result = run_cli(command)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert set(expected) <= set(names)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("models", "targets", "compile", "infer"):
        assert command in result.stdout


def test_run_needs_a_camera_and_names_them(tmp_path):
    result = run_cli("run", "--artifact", tmp_path / "none")
    assert result.returncode == 2 and "no camera to count from" in result.stderr and "--source" in result.stderr
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  - {name: door, url: '0'}\n  - {name: door, url: '1'}\n")
    result = run_cli("run", "--artifact", tmp_path / "none", "--config", config, "--validate-config")
    assert result.returncode == 2 and "camera names in sources must be unique" in result.stderr
    config.write_text("sources:\n  - {name: door, url: '0'}\n")
    result = run_cli("run", "--artifact", tmp_path / "none", "--config", config, "--validate-config",
                     "--source", "a=0", "--source", "b=rtsp://cam/1")  # --source replaces the file's cameras
    assert result.returncode == 0 and "valid (2 cameras)" in result.stdout, result.stderr


def test_source_arguments():
    from edgecv.edge.config import parse_source_arg

    assert (parse_source_arg("vtest.avi").name, parse_source_arg("vtest.avi").url) == ("main", "vtest.avi")
    assert (parse_source_arg("door=rtsp://cam/1").name, parse_source_arg("door=rtsp://cam/1").url) == \
        ("door", "rtsp://cam/1")
    assert parse_source_arg("rtsp://cam/x?a=b").url == "rtsp://cam/x?a=b"   # a URL's own '=' is no name
    assert parse_source_arg("/data/a=b.avi").url == "/data/a=b.avi"
