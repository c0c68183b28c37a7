"""Sources: watch what the user does and emit frozen work items; they never scan."""
