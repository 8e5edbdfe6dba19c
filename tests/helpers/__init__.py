"""Helpers shared by the test modules (tests never import each other): tiny models, local Ray, scripts, worlds."""
