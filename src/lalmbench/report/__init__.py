"""Reporting: published baselines (`baselines.py`), the challenge ranking over runs (`leaderboard.py`)
and the per-run HTML report with plots (`html.py`)."""
