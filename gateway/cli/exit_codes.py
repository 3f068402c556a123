"""Exit codes every `rentgate` command shares (systemd and scripts branch on them)."""

EXIT_FAILURE = 1
"""The command ran and failed (the store unreadable, a write refused)."""
EXIT_CONFIG = 2
"""The command could not run as asked: a bad config file or argument."""
