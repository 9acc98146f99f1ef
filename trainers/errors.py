"""The error every configuration check raises: a leaf, so the config and the tables it reads (presets, remaps, loss
options) share one exception type without importing each other."""


class ConfigError(ValueError):
    """A configuration value breaks a rule; the message names the field, the rule and the value."""
