"""Everything that needs a display: hotkeys, synthesized keys, tray, the daemon's IPC."""
