"""The project's settings without the analytics plugin: the relay must work the same."""

from relayproject.settings import *  # noqa: F403
from relayproject.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "analytics"]
