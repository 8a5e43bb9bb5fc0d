"""Runs long: sleeps for --seconds (default 600), for cancel and timeout."""

import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "sleep for --seconds, then exit 0"

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=600.0)

    def handle(self, *args, seconds, **options):
        self.stdout.write(f"crunching for {seconds:g}s")
        self.stdout.flush()
        time.sleep(seconds)
        self.stdout.write("done")
