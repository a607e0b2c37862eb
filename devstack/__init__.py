"""The embedded stack behind ``make run``: every component on one machine, supervised."""
