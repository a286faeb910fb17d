"""bantin: feeds and email digests for organisations that publish announcements."""

__version__ = "0.1.0"
