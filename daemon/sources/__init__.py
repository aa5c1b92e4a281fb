"""Where inputs come from: clipboard text, the selection, (later) screen regions."""
