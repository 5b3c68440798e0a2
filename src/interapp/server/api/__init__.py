"""The ``/v1`` API: what a verified plug-in may obtain about its user."""
