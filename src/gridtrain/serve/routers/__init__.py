"""One router per resource: runs, configs, the session (login) and the pages."""
