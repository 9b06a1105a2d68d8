"""The web room: a dashboard and an HTTP API served by the service when [web] enabled = true.

server.py (the app and its thread), api.py (JSON routes), pages.py with templates/ and static/ (the
dashboard), security.py (token, cookie, CSRF, headers), files.py (ids to the files the service wrote;
ondisk.py names an upload in the inbox and opens a written file without following links),
thumbs.py (pictures for the pages), actions.py (status, models, training). It calls learning/ (promote,
roll back, train now), ops/ (status) and core/ (folders, names); the service starts and stops it.
"""
