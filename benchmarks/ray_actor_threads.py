"""Inside a Ray actor with num_cpus=1 (as Flower's ClientApp actors), does torch.set_num_threads(2) take effect?
Prints the actor's torch/OpenMP thread counts.

    .venv/bin/python benchmarks/ray_actor_threads.py
"""
import threading

import ray
import torch

ray.init(num_cpus=2, include_dashboard=False)
@ray.remote(num_cpus=1)
class A:
    def info(self):
        torch.set_num_threads(2)
        import time
        x = torch.rand(2000, 2000)
        # count OS threads busy during a matmul
        t = time.perf_counter(); [x @ x for _ in range(5)]
        return dict(thread=threading.current_thread().name, n=torch.get_num_threads(), par=torch.__config__.parallel_info().splitlines()[:6])
a = A.remote()
r = ray.get(a.info.remote()); print("ACTOR", r["thread"], r["n"]); print("\n".join(r["par"]))
