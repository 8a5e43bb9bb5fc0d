"""Ignores SIGTERM and starts a child (in its process group) that ignores it too;
writes both pids to PID_FILE. Only SIGKILL of the group ends them."""

import os
import signal
import subprocess
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
)
with open(os.environ["PID_FILE"], "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
os.write(1, b'"system.idle":\n')
while True:
    time.sleep(1)
