"""Command-line entry points that behave like ESPnet's, with the plugin registered."""
