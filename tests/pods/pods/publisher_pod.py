"""Subscribes like any pod; at start it publishes NEWS_TOPIC once, then logs
whatever it receives (POD_LOG_DIR/<pod_id>.log: MSG <topic> <data>)."""

import os

from podlib import IDLE, Stdin, open_log, out, quote

pod = os.environ["MICLOW_POD_ID"]
log = open_log(pod)
out(f"{quote(os.environ['NEWS_TOPIC'])}: from-{os.environ['ROTA_POD_TASK']}", IDLE)
stdin = Stdin()
while True:
    try:
        topic, lines = stdin.frame()
    except EOFError:
        break
    log.write(f"MSG {topic} {' '.join(lines)}\n")
    out(IDLE)
