"""`make bench`: jobq's performance figures (SPEC §12), measured against a real
`python app.py` process on loopback. `python -m bench.run --help` for options."""
