"""Succeeds and prints what it was given: a django job's args and params."""

import os

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "print the positional arguments and options, exit 0"

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*", help="printed as given")
        parser.add_argument("--name", default="world")
        parser.add_argument("--times", type=int, default=1)
        parser.add_argument("--shout", action="store_true")

    def handle(self, *args, words, name, times, shout, **options):
        greeting = f"hello {name}"
        if shout:
            greeting = greeting.upper()
        for _ in range(times):
            self.stdout.write(greeting)
        self.stdout.write(f"words: {words!r}")
        self.stdout.write(f"name: {name!r}")
        self.stdout.write(f"cwd: {os.getcwd()}")
        self.stdout.write(f"run: {os.environ.get('ROTA_RUN_ID', '-')}")
