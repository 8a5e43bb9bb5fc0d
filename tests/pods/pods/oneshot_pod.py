"""Takes one message, answers it, and exits at once (status 0)."""

from podlib import IDLE, Stdin, out, quote

out(IDLE)
topic, lines = Stdin().frame()
out(f"{quote(topic + '.result')}: {' '.join(lines)}")
