"""User-facing errors: one clear line that names the fix, never a deep stack trace."""


class FlMdiscError(Exception):
    """Base class for errors shown to the user as a single line."""


class ConfigError(FlMdiscError):
    """Invalid configuration value (raised before any work starts)."""


class DataError(FlMdiscError):
    """Missing or unreadable data files."""


class CheckpointError(FlMdiscError):
    """Unreadable, corrupted or incompatible checkpoint/cache."""
