"""The sweep's status line: its time left comes from the trials seen running at once, not from a configured cap."""

import logging

from orchestrator import sweep_callbacks as callbacks
from orchestrator.sweep_callbacks import Progress


def test_time_left_uses_the_slots_actually_running(monkeypatch, caplog):
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    # no --max-concurrent: the cap defaults to the trial count, but the cluster runs two at a time
    progress = Progress(total=18, metric="val/synth/miou", mode="max", concurrency=18)
    with caplog.at_level(logging.INFO, logger=callbacks.log.name):
        for trial in ("a", "b"):
            progress.on_trial_start(0, [], trial)
        now[0] = 60.0
        progress.on_trial_result(0, [], "a", {"val/synth/miou": 0.2})
        for trial in ("a", "b"):
            progress.on_trial_complete(0, [], trial)
    last = caplog.records[-1].getMessage()
    assert "0 running, 16 pending, 2 done, 0 failed" in last
    assert "best val/synth/miou 0.2000 (a)" in last
    assert last.endswith("about 8m00s left"), last  # 16 trials x 60 s over 2 slots
