"""Fails: writes to stderr and exits with status 3."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "write a complaint to stderr and exit 3"

    def handle(self, *args, **options):
        self.stderr.write("checking the stock ...")
        raise CommandError("the stock table is on fire", returncode=3)
