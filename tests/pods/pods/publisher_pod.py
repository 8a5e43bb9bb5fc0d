"""Subscribes like any pod; at start it publishes NEWS_TOPIC once, then logs
whatever it receives (POD_LOG_DIR/<pod_id>.log: MSG <topic> <data>)."""

import os

from podlib import IDLE, Stdin, out, quote

pod = os.environ["MICLOW_POD_ID"]
log = open(os.path.join(os.environ["POD_LOG_DIR"], pod + ".log"), "a", buffering=1)
out(f"{quote(os.environ['NEWS_TOPIC'])}: from-{os.environ['ROTA_POD_TASK']}", IDLE)
stdin = Stdin()
while True:
    try:
        topic, lines = stdin.frame()
    except EOFError:
        break
    log.write(f"MSG {topic} {' '.join(lines)}\n")
    out(IDLE)
