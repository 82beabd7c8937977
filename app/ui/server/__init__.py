"""The GUI's face of the API server: the Server switch (menu and status bar)."""
