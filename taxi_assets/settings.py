"""The bottom layer of the settings: the error a wrong or missing setting raises. It imports nothing of the
package, so every module (resources included) can raise it without importing the definitions layer."""


class ConfigurationError(ValueError):
    """A setting (environment variable) is missing or wrong; the message names it."""
