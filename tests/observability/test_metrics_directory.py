"""The metrics directory must be writable by every Fleetgate process: one that is not stops the process at
start with a message naming PROMETHEUS_MULTIPROC_DIR, instead of prometheus_client's PermissionError from
deep inside the first import of a metric (django.setup(), so every command and every worker failed with it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.observability import multiproc


def test_a_directory_no_process_can_write_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc/self exists and accepts no new file, for root too (the tests may run as root, where a chmod
    # 0555 directory would still be writable)
    monkeypatch.setenv(multiproc.ENV, "/proc/self")
    with pytest.raises(multiproc.MetricsDirUnusable) as refused:
        multiproc.configure()
    message = str(refused.value)
    assert "PROMETHEUS_MULTIPROC_DIR" in message and str(Path("/proc/self").resolve()) in message


def test_a_directory_that_cannot_be_made_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(multiproc.ENV, str(blocker / "metrics"))
    with pytest.raises(multiproc.MetricsDirUnusable, match="PROMETHEUS_MULTIPROC_DIR"):
        multiproc.configure()


def test_a_writable_directory_is_made_exported_and_left_without_a_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wanted = tmp_path / "var" / "metrics"
    monkeypatch.setenv(multiproc.ENV, str(wanted))
    assert multiproc.configure() == wanted.resolve()
    assert list(wanted.iterdir()) == []  # the write probe is removed
