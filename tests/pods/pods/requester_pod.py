"""Sends REQUESTS messages to topic TARGET one after the other, each with a token
of its own, and checks that every TARGET.result it gets carries its own token.
Logs to POD_LOG_DIR/<pod_id>.log: OK <token> or WRONG <token> <got>, then DONE."""

import os

from podlib import Stdin, open_log, out, quote

pod = os.environ["MICLOW_POD_ID"]
target = os.environ["TARGET"]
n = int(os.environ.get("REQUESTS", "10"))
log = open_log(pod)
stdin = Stdin()
for i in range(n):
    token = f"{pod}-{i}"
    out(f"{quote(target)}: {token}")
    topic, lines = stdin.frame()
    got = "\n".join(lines)
    if topic == target + ".result" and got == token:
        log.write(f"OK {token}\n")
    else:
        log.write(f"WRONG {token} {topic} {got}\n")
log.write("DONE\n")
# Stay up (never idle: it takes no messages) until the host stops it.
try:
    while True:
        stdin.frame()
except EOFError:
    pass
