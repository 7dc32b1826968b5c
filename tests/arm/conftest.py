import pytest

from arm.userland import ArmPython, UserlandUnavailable, ensure_aarch64_python


@pytest.fixture(scope="session")
def arm() -> ArmPython:
    """The cached aarch64 userland (debootstrap + PyPI aarch64 wheels), built on first use."""
    try:
        return ensure_aarch64_python()
    except UserlandUnavailable as exc:  # CI installs everything it needs: a missing piece is a failure
        pytest.fail(f"aarch64 userland unavailable: {exc}")
