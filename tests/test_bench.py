"""Bench helpers (the benchmark itself is a command, not a test)."""

from app.bench import RssSampler, _stats, bench_markdown


def test_stats():
    assert _stats([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_rss_sampler_counts_this_process():
    assert RssSampler("/no/such/flwr-home").sample() > 10  # MB: at least the Python interpreter itself


def test_bench_markdown_lists_every_measure():
    st = {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    r = {"dsc_over_st_clean": st, "dsc_over_st_poisoned": st, "at_over_st": st, "dgc_over_gc": st,
         "dgc_over_gc_aggregation_only": st, "flwr_over_inprocess": 1.1, "flwr_startup_s": 12.0,
         "flwr_round_s": st, "deployment_round_s": st, "deployment_over_simulation": 1.9,
         "deployment_subprocess_round_s": st, "deployment_subprocess_over_simulation": 4.0,
         "round_parts_s": {k: {"simulation": st, "deployment": st, "deployment_subprocess": st}
                           for k in ("wait_before_work_s", "attacker_work_s", "after_last_reply_s")},
         "peak_rss_mb": {"default": 2000, "10_clients": 3000}, "attack_over_honest": 10.0,
         "st_batch_s_clean": {"median": 0.05}, "machine": {"cores": 2, "torch": "x", "torch_threads_client": 1,
                                                          "torch_threads_server": 2},
         "config": {"preset": "cpu", "model": "m", "clients": 5, "rounds": 20, "strategy": "dgc", "attack": "a"}}
    md = bench_markdown(r)
    for key in ("DSC / ST per batch, clean", "poisoned", "AT / ST", "DGC / GC, whole round", "aggregation only",
                "flwr run (Ray) / in-process", "start-up", "peak RSS", "attacker / honest",
                "Deployment Engine / simulation", "fresh ClientApp interpreter", "steady round (s)",
                "wait before its client works", "attacker's own work", "after its last reply"):
        assert key in md
    assert "15.7" in md  # the paper's DSC/ST ratio beside ours


def test_correction_settings_are_the_runs_defence_or_dscs_own_defaults():
    from omegaconf import OmegaConf

    from app.bench import correction_settings
    from fl_mdisc.config import compose, conf_dir

    assert correction_settings(compose([])) == OmegaConf.load(conf_dir() / "defense" / "dsc.yaml")  # defense=none
    assert correction_settings(compose(["defense=at", "defense.eps=0.1"])).eps == 0.1
