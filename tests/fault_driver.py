"""Runs the plugin's spk_train again and again in forked children, each killed with
SIGKILL at a chosen moment (a fault), for test_crash_safety.

``python tests/fault_driver.py SPEC.json``: SPEC holds ``args`` (spk_train's
arguments, without --output_dir) and ``runs``, a list of ``{"output_dir": ...,
"fault": {...} or null}`` done in order. ESPnet and torch are imported once here;
each run is a fork (so it costs training time, not 12 s of imports). A fault counts
events in its child and, at the ``n``-th, kills it:

* ``step``: an optimizer step; ``validation``: the embedding of the validation
  utterances; ``average``: ESPnet's n-best model averaging;
* ``write`` of ``file``: in the middle of writing it (the temporary file cut to
  half its bytes, not yet renamed); ``written`` ``file``: right after it was renamed
  into place; ``link`` ``file``: right before the link is replaced.

Prints one JSON list: per run, the signal that ended it (or null) and its exit code.
"""

import json
import os
import signal
import sys
import traceback
from pathlib import Path


def _kill_at(n: int):
    """A function that kills this process the ``n``-th time it is called."""
    count = [0]

    def event():
        count[0] += 1
        if count[0] == n:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return event


def _wrap_call(owner, name: str, event) -> None:
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        event()
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def install(fault) -> None:
    import espnet2.train.trainer as espnet_trainer
    import torch

    from espnet_plugin_intertopk.safe_io import atomic
    from espnet_plugin_intertopk.train import validation

    if fault is None:
        return
    event = _kill_at(fault.get("n", 1))
    at, name = fault["at"], fault.get("file")
    if at == "step":
        _wrap_call(torch.optim.Adam, "step", event)
    elif at == "validation":
        _wrap_call(validation, "embed_utterances", event)
    elif at == "average":
        _wrap_call(espnet_trainer, "average_nbest_models", event)
    elif at == "write":
        fsync = os.fsync

        def cut_and_kill(fd):
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if path.name.startswith(f"{atomic.TEMP_PREFIX}{name}."):
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                event()
            return fsync(fd)

        os.fsync = cut_and_kill
    elif at in ("written", "link"):
        replace = os.replace

        def replace_and_kill(src, dst, *args, **kwargs):
            hit = Path(dst).name == name
            if hit and at == "link":
                event()
            replace(src, dst, *args, **kwargs)
            if hit and at == "written":
                event()

        os.replace = replace_and_kill
    else:
        raise ValueError(f"unknown fault {fault}")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    import torch

    from espnet_plugin_intertopk.bin import spk_train

    torch.set_num_threads(1)
    results = []
    for run in spec["runs"]:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                install(run["fault"])
                spk_train.main(spec["args"] + ["--output_dir", run["output_dir"]])
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        results.append(
            {
                "fault": run["fault"],
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
