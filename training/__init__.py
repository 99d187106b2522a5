"""Training and evaluation toolkit for AFLoc (Lightning system, data, CLIs). Imports nothing heavy here."""
