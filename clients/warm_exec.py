"""A SuperExec that starts each ClientApp task by forking a process that has already imported torch, Flower and
the ClientApp, instead of starting a fresh ``flwr-clientapp`` interpreter.

Flower 1.42 runs every message a SuperNode receives in a new ``flwr-clientapp`` process, launched by a SuperExec
(``flower-superexec``; the SuperNode starts one itself under ``--isolation subprocess``, the default). Such a
process imports torch, Flower and the app before the ClientApp sees its message; with several SuperNodes on few
cores these imports, not the client's work, set the round's time (``fl-mdisc bench`` measures both ways,
docs/deployment.md#speed).

Under ``--isolation process`` Flower expects the operator to run the SuperExec beside the SuperNode. This module
is that SuperExec: Flower's own ``flower-superexec`` (same arguments, same task loop and Runtime API calls), with
one thing replaced through Flower's ``Executor`` protocol (``flwr.supercore.superexec.executor.types``): a
ClientApp task is run by :func:`flwr.supernode.runtime.run_clientapp.run_clientapp` in a child forked from this
warm process, which then exits. Every task still gets its own process (Flower's isolation between messages, and
nothing of one message survives into the next), the same Flower code pulls the message and pushes the reply, and
a child that crashes or hangs is handled by the SuperNode exactly like a ``flwr-clientapp`` that does.

The parent only imports: it never runs torch code, so no OpenMP or intra-op thread pool exists when it forks.
Other task types (none reach a SuperNode) go to Flower's subprocess executor.

Run it as ``python -m clients.warm_exec --insecure --runtime-api-address 127.0.0.1:<SuperNode --port>
--parent-pid <SuperNode pid>``, next to ``flower-supernode --isolation process``.
"""

from __future__ import annotations

import os
import sys


def preload() -> None:
    """Import what every ClientApp process would import on its own (torch, Flower's ClientApp runtime, ours)."""
    import torch  # noqa: F401
    from flwr.supernode.runtime import run_clientapp  # noqa: F401

    from . import client_app  # noqa: F401


class ForkExecutor:
    """Flower ``Executor``: ClientApp tasks run in a forked child, everything else as Flower's subprocess executor."""

    def __init__(self):
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self.fallback = SubprocessExecutor()
        self.children: set[int] = set()

    def get_eligible_capacity(self, supported_task_types, **kw):
        return self.fallback.get_eligible_capacity(supported_task_types, **kw)

    def wait_for_capacity(self, task_type=None, **kw):
        return self.fallback.wait_for_capacity(task_type, **kw)

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self.fallback.launch(spec)
        pid = os.fork()
        if pid == 0:
            os._exit(_run_child(spec))
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (called by Flower's task loop between polls)."""
        for pid in list(self.children):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        self.fallback.close()


def _run_child(spec) -> int:
    """The forked child: what ``flwr-clientapp`` does with the same arguments; returns its exit code."""
    try:
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        if spec.suppress_output:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
        run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token, insecure=spec.insecure,
                      certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
                      parent_pid=spec.parent_pid, runtime_dependency_install=spec.runtime_dependency_install)
        return 0
    except SystemExit as e:  # flwr_exit ends every task this way
        return e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - never return into the parent's task loop
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> None:
    """``flower-superexec`` with :class:`ForkExecutor` (its command-line arguments unchanged)."""
    preload()
    import importlib

    from flwr.supercore.cli.flower_superexec import flower_superexec

    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")  # the module (its package exports a function of that name)
    loop.get_executor = lambda *a, **kw: ForkExecutor()  # the one executor this SuperExec's task loop uses
    flower_superexec()


if __name__ == "__main__":
    main()
