"""The floor every layer stands on: errors, file io and input checks, statistics, plots, the HTML page, progress
and the command-line floor. Imports nothing from headlab above it."""
