"""Process-fault commands for a "foreign" server in tests/test_external_backend.py: what a user's
``systemctl kill`` / ``kubectl`` lines do, for a server of a cluster this test started itself.

    external_ctl.py kill|pause|resume|start PIDFILE

kill: SIGKILL the server's process group and wait until it is gone; pause / resume: SIGSTOP /
SIGCONT; start: run the recorded command again in a new session and record its pidfile (so the
cluster that owns the server still reaps it). Exit status 0 only if the action took effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    action, pidfile = sys.argv[1], Path(sys.argv[2])
    rec = json.loads(pidfile.read_text())
    if action == "start":
        log = open(pidfile.with_suffix(".restart.log"), "ab")  # noqa: SIM115
        env = {**os.environ, "CACHECERT_CLUSTER": str(pidfile.parent.parent)}
        p = subprocess.Popen(rec["cmd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, cwd=pidfile.parent.parent)
        with open(f"/proc/{p.pid}/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps({**rec, "pid": p.pid, "pgid": p.pid, "start_time": start}))
        tmp.replace(pidfile)
        return 0
    sig = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}[action]
    try:
        os.killpg(rec["pgid"], sig)
    except ProcessLookupError:
        print(f"no process group {rec['pgid']}", file=sys.stderr)
        return 1
    if action == "kill":
        deadline = time.monotonic() + 5
        while Path(f"/proc/{rec['pid']}").exists() and time.monotonic() < deadline:
            try:  # a zombie child of the cluster's owner counts as gone
                if open(f"/proc/{rec['pid']}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
