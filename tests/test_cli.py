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
