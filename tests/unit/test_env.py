"""The CPU identity in the environment header, read from files shaped like Linux's."""

from natbench.env import cpu_identity

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx2 hypervisor

processor\t: 1
cpu family\t: 99
"""


def _cache(root, index, level, kind, size):
    folder = root / f"index{index}"
    folder.mkdir(parents=True)
    for name, value in (("level", level), ("type", kind), ("size", size)):
        (folder / name).write_text(f"{value}\n")


def test_cpu_identity_reads_the_first_processor_and_its_caches(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    caches = tmp_path / "cache"
    for index, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                                 (2, "Unified", "512K"), (3, "Unified", "32768K")]):
        _cache(caches, index, level, kind, size)
    assert cpu_identity(cpuinfo, caches) == {
        "cpu_family": 25, "cpu_model_number": 1, "cpu_stepping": 1, "cpu_virtualized": True,
        "cpu_caches": {"L1d": "32K", "L1i": "32K", "L2": "512K", "L3": "32768K"}}


def test_cpu_identity_leaves_out_what_it_cannot_read(tmp_path):
    assert cpu_identity(tmp_path / "absent", tmp_path / "absent") == {}
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some ARM core\nflags\t\t: fp asimd\n")
    assert cpu_identity(cpuinfo, tmp_path / "absent") == {"cpu_virtualized": False}


def test_cpu_usage_reads_busy_and_stolen_ticks_and_load_between_subtracts_this_process(tmp_path):
    import os

    from natbench.env import cpu_usage, load_between

    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    stat.write_text(f"cpu  {3 * tick} {tick} {2 * tick} {50 * tick} 0 0 {tick} {4 * tick} 0 0\ncpu0 1 2 3\n")
    busy, stolen, own = cpu_usage(stat)
    assert (busy, stolen) == (7.0, 4.0) and own > 0
    assert cpu_usage(tmp_path / "absent") is None
    # 5 s busy, of which this process 1.5 s; 0.25 s stolen
    assert load_between((10.0, 1.0, 2.0), (15.0, 1.25, 3.5)) == {"other_cpu_s": 3.5, "stolen_cpu_s": 0.25}
    assert load_between(None, (1.0, 0.0, 0.0)) == {}
