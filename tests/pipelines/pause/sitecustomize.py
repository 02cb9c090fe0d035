"""Pauses a kill test's job at a named point, in whichever process reaches it.

The kill tests put this directory on ``PYTHONPATH``, so every Python process of the job (the
launcher and each Beam worker) imports this module at start-up. With ``SHARDFORGE_PAUSE_AT``
naming a stage (comma-separated), the process that reaches ``progress.hook(stage)`` writes
``{"pid", "stage"}`` to ``SHARDFORGE_PAUSE_FILE`` and sleeps until the test kills it.
"""

import os

if os.environ.get("SHARDFORGE_PAUSE_AT"):
    import json
    import time

    from shardforge.pipelines import progress

    def _pause(stage: str) -> None:
        if stage not in os.environ["SHARDFORGE_PAUSE_AT"].split(","):
            return
        marker = os.environ.get("SHARDFORGE_PAUSE_FILE")
        if marker:
            tmp = f"{marker}.{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({"pid": os.getpid(), "stage": stage}, f)
            os.replace(tmp, marker)
        while True:
            time.sleep(60)

    progress.on_hook(_pause)
