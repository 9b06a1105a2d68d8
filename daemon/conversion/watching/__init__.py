"""Watching folders for complete files: the watcher, its observers, and its notes on files it leaves alone.

Knows nothing of claims or conversion: the inbox feed and the pairs intake
each hand it a folder, a filter and a handler.
"""
