"""Answers every message on T with T.result, then reports idle.

POD_LOG_DIR  write <pod_id>.log there: START, MSG <topic> <data>, VIOLATION
POD_SLEEP    seconds to work on each message
POD_REPLY    "id" (default): "<pod_id> <data>"; "echo": the data
"""

import os
import sys
import time

from podlib import IDLE, Stdin, open_log, out, quote

pod = os.environ["MICLOW_POD_ID"]
sleep = float(os.environ.get("POD_SLEEP", "0"))
echo = os.environ.get("POD_REPLY", "id") == "echo"
log = open_log(pod)
if log:
    log.write(f"START {time.time()}\n")
stdin = Stdin()
out(IDLE)
while True:
    try:
        topic, lines = stdin.frame()
        data = "\n".join(lines)
        if sleep:
            time.sleep(sleep)
        if log:
            log.write(f"MSG {topic} {data}\n")
            if stdin.written_while_busy():
                log.write("VIOLATION\n")
    except EOFError:
        sys.exit(0)
    out(f"{quote(topic + '.result')}: {data if echo else pod + ' ' + data}", IDLE)
