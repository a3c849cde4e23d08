"""The benchmark's yardsticks: the critical path and the lower bound the limits allow."""

from bench import latencies as lat


def test_the_critical_path_is_the_sum_of_the_chain_latencies():
    t = lat.LATENCY_S
    vm = t["register"] + t["power_on"] + t["tools"]
    assert lat.per_vm_chain_s() == vm
    block = t["copy"] + t["present"] + t["rescan"] + t["resignature"]
    assert lat.critical_path_s("iscsi") == block + vm
    assert lat.critical_path_s("fc") == block + vm
    assert lat.critical_path_s("nfs") == t["copy"] + t["present"] + t["nfs_mount"] + vm


def test_the_lower_bound_counts_waves_of_vms_and_of_power_ons():
    shared, chain, on = lat.shared_path_s("iscsi"), lat.per_vm_chain_s(), lat.LATENCY_S["power_on"]
    assert lat.lower_bound_s("iscsi", 1, 32, 8) == lat.critical_path_s("iscsi")
    # 100 VMs, 32 at once, 8 power-ons per host at once: 13 waves of power-ons bind
    assert lat.lower_bound_s("iscsi", 100, 32, 8) == shared + 13 * on + chain - on
    # 8 at once: 13 waves of whole VM chains bind
    assert lat.lower_bound_s("iscsi", 100, 8, 8) == shared + 13 * chain
