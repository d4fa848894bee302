"""The extension's build stamp: what light commands read instead of compiling."""

import json

import pytest

from natbench import extension


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return extension.build_directory()


def _stamp(folder, ok=True, reason=None, library=None):
    plan = extension._plan()
    built = extension.Build(ok, reason, 41.0, str(folder), plan.cflags, plan.ldflags)
    extension._write_stamp(folder, built, extension.fingerprint(plan), library)
    return built


def test_no_stamp_is_not_built(folder):
    assert extension.status() is None


def test_a_stamp_of_these_sources_and_flags_is_the_build(folder, tmp_path):
    library = tmp_path / "natbench_ext.so"
    library.write_bytes(b"")
    built = _stamp(folder, library=str(library))
    assert extension.status() == built
    library.unlink()  # a build whose library is gone is no build
    assert extension.status() is None


def test_a_failed_build_is_remembered_with_its_reason(folder):
    built = _stamp(folder, ok=False, reason="the natbench extension did not build: no g++")
    assert extension.status() == built


def test_a_stamp_of_other_sources_or_flags_is_not_this_build(folder, tmp_path, monkeypatch):
    library = tmp_path / "natbench_ext.so"
    library.write_bytes(b"")
    _stamp(folder, library=str(library))
    monkeypatch.setattr(extension, "CFLAGS", (*extension.CFLAGS, "-DOTHER"))
    assert extension.status() is None
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stamp = json.loads((folder / extension.STAMP).read_text())
    (folder / extension.STAMP).write_text(json.dumps({**stamp, "fingerprint": "0" * 64}))
    assert extension.status() is None


def test_the_fingerprint_covers_every_source_file(tmp_path, monkeypatch):
    plan = extension._plan()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "na_kernels.h").write_text("// one kernel")
    monkeypatch.setattr(extension, "CSRC", tmp_path)
    before = extension.fingerprint(plan)
    (tmp_path / "cpu" / "na_kernels.h").write_text("// another kernel")
    assert extension.fingerprint(plan) != before


def test_a_sanitized_build_is_another_build_of_the_cpu_kernels_alone(folder, tmp_path, monkeypatch):
    library = tmp_path / "natbench_ext.so"
    library.write_bytes(b"")
    _stamp(folder, library=str(library))
    monkeypatch.setenv(extension.SANITIZE, "address,undefined")
    plan = extension._plan()
    assert "-fsanitize=address,undefined" in plan.cflags and "-fsanitize=address,undefined" in plan.ldflags
    assert "-O3" not in plan.cflags and plan.sources == extension.SOURCES
    assert "sanitizers" in plan.cuda_reason
    assert extension.status() is None  # the optimized build's stamp is not this build's
