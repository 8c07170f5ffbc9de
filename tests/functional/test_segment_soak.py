"""bench/segment_soak.py at a small size: the segment job (the real entrypoint, in a
subprocess) SIGKILLed inside a tell's transaction (every statement run, COMMIT not), right
after that tell committed (adapt not asked), inside adapt's stop (the run's stop reason not
committed), and once at a random moment; each resumed to the end equals the uninterrupted job:
generation, stop reason, champion genes, best fitness, optimizer state, fitness history and
every candidate's genes and fitness. The harness reads the phase each kill left from the store,
so the test also shows that the kills landed where they were aimed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATIONS = 3
WRITES_PER_GENERATION = 5  # ask, 3 shards (12 candidates in shards of 5), tell
TELL_OF_G0 = WRITES_PER_GENERATION


@pytest.mark.slow
def test_sigkill_inside_and_after_a_tell_and_inside_the_stop_resumes_to_the_same_run(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "bench/segment_soak.py",
            "--kills",
            "1",
            "--write-kills",
            "0",
            "--write-at",
            f"{TELL_OF_G0}:inside",
            "--write-at",
            f"{TELL_OF_G0}:after",
            "--write-at=-2:inside",  # the stop: save_run (stop_reason), then the decision (the last)
            "--generations",
            str(GENERATIONS),
            "--population",
            "12",
            "--shard-size",
            "5",
            "--no-target",
            "--work",
            str(tmp_path / "soak"),
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"{GENERATIONS} generations told (reached {GENERATIONS} generations)" in out
    # Every generation's five writes, then the stop's two.
    assert f"{WRITES_PER_GENERATION * GENERATIONS + 2} store writes" in out
    writes = WRITES_PER_GENERATION * GENERATIONS + 2

    def trial(what: str) -> str:
        (line,) = [line for line in out.splitlines() if f"SIGKILL {what} " in line]
        return line

    assert "asked g0, 3 shard(s) stored" in trial(f"inside write {TELL_OF_G0}/{writes}")
    assert "told g0, next not asked" in trial(f"after write {TELL_OF_G0}/{writes}")
    assert f"told g{GENERATIONS - 1}, the last" in trial(f"inside write {writes - 1}/{writes}")
    assert out.count(": same") == 4 and "DIVERGED" not in out
    assert "diverged: 0 of 4" in out
