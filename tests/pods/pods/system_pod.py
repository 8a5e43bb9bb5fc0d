"""On every message: asks the system for the latest message of the topic named
in the message's data, then an unknown system command, and answers with both
frames as the host sent them (JSON)."""

import json

from podlib import IDLE, Stdin, out, quote

stdin = Stdin()
out(IDLE)
while True:
    try:
        topic, lines = stdin.frame()
    except EOFError:
        break
    asked = lines[0] if lines else ""
    out(f'"system.pull": {asked}')
    pull = stdin.frame()
    out('"system.no-such-command": x')
    unknown = stdin.frame()
    out(f"{quote(topic + '.result')}: {json.dumps([pull, unknown])}", IDLE)
