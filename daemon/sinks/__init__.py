"""Where results go: clipboard, paste, notifications, history."""
